//! The HTTP endpoints of the real binary: `/metrics` agrees with the files written and the
//! run's own summary, the status page shows the same in Debian's headless chromium,
//! `/healthz` and `/readyz` answer, and Debian's Prometheus scrapes the series; `promtool`
//! accepts monitoring/prometheus.yml.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A child serving metrics, killed by PID when dropped.
struct Serving {
    child: Child,
    address: SocketAddr,
    /// Its stderr lines, read on a thread so it never blocks on a full pipe.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Serving {
    /// Spawns `command` (stderr piped) and waits for the line that says where it serves.
    fn spawn(mut command: Command) -> Serving {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (found, address) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let line = line.unwrap_or_default();
                    if let Some(address) = status_address(&line) {
                        let _ = found.send(address);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let address = address
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no metrics address: {:?}", log.lock().unwrap()));
        Serving {
            child,
            address,
            log,
        }
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = http_get(self.address, "/metrics");
        assert_eq!(status, 200, "{body}");
        parse_metrics(&body)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("log: {:#?}", self.log.lock().unwrap());
        }
    }
}

/// The number after `label` in the summary line that starts with it.
fn summary_number(summary: &str, label: &str) -> f64 {
    summary
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("{label} in {summary}"))
}

#[test]
fn metrics_agree_with_the_files_and_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    generate_file(
        &input,
        &[
            "--events",
            "40k",
            "--rate",
            "200",
            "--seed",
            "11",
            "--malformed-share",
            "0.02",
            "--late-share",
            "0.01",
        ],
    );
    let storage = dir.path().join("out");
    let mut command = pageview();
    command
        .args(["process", "--input", "-", "--storage"])
        .arg(&storage)
        .args([
            "--file-max-age-ms",
            "300",
            "--metrics-port",
            "0",
            "--metrics-host",
            "127.0.0.1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut serving = Serving::spawn(command);
    assert_eq!(http_get(serving.address, "/healthz"), (200, "ok\n".into()));
    let mut stdin = serving.child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&input).unwrap()).unwrap();
    // Two events from a clock set to 2099: dead letters of their own kind.
    let future = b"{\"user_id\":1,\"postcode\":\"E1\",\"webpage\":\"https://a\",\"timestamp\":4070908800000}\n";
    stdin.write_all(&future.repeat(2)).unwrap();
    stdin.flush().unwrap();
    // Everything read, and every raw row, dead letter and closed window in a file published
    // by age: nothing more is written until stdin closes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = serving.metrics();
        let all_read = m["pageview_records_read_total"] == 40_002.0;
        let raw_published = m.get("pageview_rows_written_total{dataset=\"raw\"}")
            == m.get("pageview_records_valid_total");
        let windows_published = m.get("pageview_rows_written_total{dataset=\"aggregated\"}")
            == m.get("pageview_window_rows_total");
        let dead_letters = sum_of(&m, "pageview_records_malformed_total")
            + m["pageview_records_late_total"]
            + m["pageview_records_future_total"];
        let dlq_published =
            m.get("pageview_rows_written_total{dataset=\"dlq\"}") == Some(&dead_letters);
        if all_read && raw_published && windows_published && dlq_published {
            break m;
        }
        assert!(Instant::now() < deadline, "metrics never caught up: {m:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (status, body) = http_get(serving.address, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let raw_rows: usize = read_dataset(&storage, RAW)
        .iter()
        .map(|(_, b)| b.num_rows())
        .sum();
    assert_eq!(
        metrics["pageview_rows_written_total{dataset=\"raw\"}"],
        raw_rows as f64
    );
    assert_eq!(
        metrics["pageview_files_written_total{dataset=\"raw\"}"],
        parquet_files(&storage.join(RAW)).len() as f64
    );
    assert!(
        metrics["pageview_watermark_seconds"] > 1.6e9,
        "{metrics:#?}"
    );
    // Local storage times each file's write (fsync and rename), one per published file.
    assert_eq!(
        metrics["pageview_storage_request_seconds_count{action=\"write\"}"],
        sum_of(&metrics, "pageview_files_written_total"),
        "{metrics:#?}"
    );
    the_page_shows(&serving, &metrics, &storage);

    drop(stdin);
    let output = std::mem::replace(&mut serving.child, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    assert!(output.status.success());
    let summary = stdout(&output);
    assert_eq!(
        metrics["pageview_records_read_total"],
        summary_number(&summary, "")
    );
    assert_eq!(
        metrics["pageview_records_valid_total"],
        summary_number(&summary, "valid")
    );
    let late = metrics["pageview_records_late_total"];
    assert!(late > 0.0);
    assert!(summary.contains(&format!("(late {late})")), "{summary}");
    assert_eq!(metrics["pageview_records_future_total"], 2.0);
    assert_eq!(
        sum_of(&metrics, "pageview_records_malformed_total")
            + late
            + metrics["pageview_records_future_total"],
        summary_number(&summary, "dead-letter")
    );
    for (series, value) in &metrics {
        if let Some(kind) = series
            .strip_prefix("pageview_records_malformed_total{error_kind=\"")
            .and_then(|k| k.strip_suffix("\"}"))
        {
            assert!(
                summary.contains(&format!("{kind} {value}")),
                "{kind} {value} in {summary}"
            );
        }
    }
}

/// The status page as Debian's headless chromium renders it after a few refreshes: its DOM.
fn browse(address: SocketAddr) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("http://{address}/"))
        .output()
        .expect("chromium runs (scripts/test.sh installs Debian's)");
    assert!(out.status.success(), "{}", stderr(&out));
    let dom = stdout(&out);
    assert!(
        dom.contains("data-refreshes="),
        "the page never refreshed: {dom}"
    );
    dom
}

/// The number shown in the element `id`, or None when it shows none.
fn shown(dom: &str, id: &str) -> Option<f64> {
    let pattern = format!(r#"id="{}"[^>]*data-value="([^"]*)""#, regex::escape(id));
    let found = regex::Regex::new(&pattern).unwrap().captures(dom)?;
    Some(found[1].parse().unwrap())
}

/// The numbers in the cells of the table row `id`.
fn shown_row(dom: &str, id: &str) -> Vec<f64> {
    let pattern = format!(r#"<tr id="{}">(.*?)</tr>"#, regex::escape(id));
    let row = regex::Regex::new(&pattern)
        .unwrap()
        .captures(dom)
        .unwrap_or_else(|| panic!("no row {id} in {dom}"));
    regex::Regex::new(r#"data-value="([^"]*)""#)
        .unwrap()
        .captures_iter(&row[1])
        .map(|c| c[1].parse().unwrap())
        .collect()
}

/// The page agrees with `metrics` (taken once the counts stopped moving) and charts the
/// latest window written to `storage`.
fn the_page_shows(serving: &Serving, metrics: &BTreeMap<String, f64>, storage: &std::path::Path) {
    // Nothing is read any more: once the throughput's 1 s measure holds only idle time, the
    // page must say 0, as /api/status does.
    std::thread::sleep(Duration::from_millis(2500));
    let dom = browse(serving.address);
    assert!(
        dom.contains(r#"<span id="state" class="ok">ready</span>"#),
        "{dom}"
    );
    for (id, series) in [
        ("records", "pageview_records_read_total"),
        ("valid", "pageview_records_valid_total"),
        ("late", "pageview_records_late_total"),
        ("future", "pageview_records_future_total"),
        ("windows", "pageview_windows_emitted_total"),
        ("window-rows", "pageview_window_rows_total"),
    ] {
        assert_eq!(shown(&dom, id), Some(metrics[series]), "{id}");
    }
    let late = metrics["pageview_records_late_total"];
    let future = metrics["pageview_records_future_total"];
    let dead = sum_of(metrics, "pageview_records_malformed_total") + late + future;
    assert_eq!(shown(&dom, "dead-letters"), Some(dead));
    assert_eq!(shown_row(&dom, "dlq-late_event"), [late]);
    assert_eq!(shown_row(&dom, "dlq-future_timestamp"), [future]);
    for (series, value) in metrics {
        if let Some(kind) = series
            .strip_prefix("pageview_records_malformed_total{error_kind=\"")
            .and_then(|k| k.strip_suffix("\"}"))
        {
            assert_eq!(shown_row(&dom, &format!("dlq-{kind}")), [*value], "{kind}");
        }
    }
    for dataset in ["raw", "aggregated", "dlq"] {
        let of = |name: &str| metrics[&format!("{name}{{dataset=\"{dataset}\"}}")];
        let expected = [
            of("pageview_files_written_total"),
            of("pageview_rows_written_total"),
            of("pageview_written_bytes_total"),
        ];
        assert_eq!(shown_row(&dom, &format!("files-{dataset}")), expected);
    }
    // Measured a moment apart, so only roughly equal.
    let delay = shown(&dom, "watermark-delay").unwrap();
    let delay_then = metrics["pageview_watermark_delay_seconds"];
    assert!((delay - delay_then).abs() < 30.0, "{delay} vs {delay_then}");
    assert_eq!(shown(&dom, "throughput"), Some(0.0), "idle: {dom}");
    let (_, status) = http_get(serving.address, "/api/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["records_per_second"], 0.0, "{status}");
    assert_eq!(shown(&dom, "lag"), None, "no lag outside Kafka");

    // The newest window shown is the last one written, with its busiest postcodes.
    let windows = window_counts(storage);
    let (&start, counts) = windows.last_key_value().expect("a window was written");
    let head = regex::Regex::new(r#"id="window-0" data-start="(\d+)" data-events="(\d+)""#)
        .unwrap()
        .captures(&dom)
        .unwrap_or_else(|| panic!("no latest window in {dom}"));
    assert_eq!(head[1].parse::<i64>().unwrap(), start);
    let events: i64 = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(head[2].parse::<i64>().unwrap(), events);
    let rest = &dom[head.get(0).unwrap().end()..];
    let window = &rest[..rest.find(r#"id="window-1""#).unwrap_or(rest.len())];
    let bars: Vec<(String, i64)> =
        regex::Regex::new(r#"class="bar" data-postcode="([^"]+)" data-value="(\d+)""#)
            .unwrap()
            .captures_iter(window)
            .map(|c| (c[1].to_string(), c[2].parse().unwrap()))
            .collect();
    let mut busiest = counts.clone();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    busiest.truncate(10);
    assert_eq!(bars, busiest);
}

#[test]
fn prometheus_scrapes_a_running_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = pageview();
    command
        .args(["run", "--simulated-time", "--rate", "500", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--metrics-port", "0", "--metrics-host", "127.0.0.1"])
        .stdout(Stdio::null());
    let pipeline = Serving::spawn(command);
    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pageview\n    static_configs:\n      - targets: [\"{}\"]\n",
            pipeline.address
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs (scripts/test.sh installs Debian's)");
    let query = |q: &str| -> Option<f64> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "--get",
                &format!("http://127.0.0.1:{port}/api/v1/query"),
            ])
            .args(["--data-urlencode", &format!("query={q}")])
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let scraped = loop {
        let up = query("up{job=\"pageview\"}");
        if let Some(read) = query("pageview_records_read_total")
            && up == Some(1.0)
            && read > 0.0
        {
            break read;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped nothing in 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let valid = query("pageview_records_valid_total").unwrap();
    assert!(valid > 0.0 && valid <= scraped, "{valid} of {scraped}");
    let watermark = query("pageview_watermark_seconds").unwrap();
    assert!(watermark > 1.6e9, "{watermark}");
    let kinds = query("count(pageview_records_malformed_total)").unwrap();
    assert!(kinds >= 1.0, "{kinds}");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

/// `promtool ARGS…` in monitoring/; fails the test with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let monitoring = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring)
        .output()
        .expect("promtool runs (scripts/test.sh installs Debian's prometheus)");
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn promtool_accepts_the_config_and_the_rules_and_every_alert_fires_when_it_should() {
    promtool(&["check", "config", "prometheus.yml"]);
    let rules = promtool(&["check", "rules", "alerts.yml"]);
    assert!(rules.contains("6 rules found"), "{rules}");
    promtool(&["test", "rules", "alerts_test.yml"]);
    // Every alert has a test case.
    let tests = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/alerts_test.yml"),
    )
    .unwrap();
    for alert in [
        "PageviewConsumerLagGrowing",
        "PageviewDeadLetterShareHigh",
        "PageviewFutureEvents",
        "PageviewWatermarkStalled",
        "PageviewNoFilesWritten",
    ] {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no test for {alert}"
        );
    }
}

#[test]
fn a_kafka_processor_reports_its_lag_per_partition() {
    let broker = crate::common::kafka::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let produced = run(&[
        "generate",
        "--bootstrap-servers",
        &broker.bootstrap,
        "--events",
        "3000",
        "--rate",
        "100000",
        "--simulated-time",
    ]);
    assert!(produced.status.success(), "{}", stderr(&produced));
    let mut command = pageview();
    command
        .args([
            "process",
            "--bootstrap-servers",
            &broker.bootstrap,
            "--storage",
        ])
        .arg(dir.path())
        .args(["--metrics-port", "0", "--metrics-host", "127.0.0.1"])
        .stdout(Stdio::null());
    let serving = Serving::spawn(command);
    // librdkafka reports lag every 5 s; once everything is read, every partition's is 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = serving.metrics();
        let lags: Vec<f64> = m
            .iter()
            .filter(|(k, _)| k.starts_with("pageview_consumer_lag{partition="))
            .map(|(_, v)| *v)
            .collect();
        if m.get("pageview_records_read_total") == Some(&3000.0)
            && lags.len() == 3
            && lags.iter().all(|&l| l == 0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lag of 0 for 3 partitions: {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, _) = http_get(serving.address, "/readyz");
    assert_eq!(status, 200);
    // The status page shows the same lag, in total and per partition.
    let dom = browse(serving.address);
    assert_eq!(shown(&dom, "lag"), Some(0.0), "{dom}");
    for partition in 0..3 {
        let row = shown_row(&dom, &format!("partition-{partition}"));
        assert_eq!(row.first(), Some(&0.0), "partition {partition}: {dom}");
    }
    let m = serving.metrics();
    assert!(
        m["pageview_checkpoint_duration_seconds_count"] >= 1.0,
        "{m:#?}"
    );
    assert!(m["pageview_checkpoint_age_seconds"] < 60.0, "{m:#?}");
}

#[test]
fn run_through_kafka_serves_both_sides_and_the_page_shows_them() {
    let broker = crate::common::kafka::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let mut command = pageview();
    command
        .args([
            "run",
            "--kafka",
            &broker.bootstrap,
            "--rate",
            "500",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--metrics-port", "0", "--metrics-host", "127.0.0.1"])
        .stdout(Stdio::null());
    let serving = Serving::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(60);
    let sent = "pageview_generator_events_sent_total";
    let read = "pageview_records_read_total";
    let before = loop {
        let m = serving.metrics();
        let lag = m.keys().any(|k| k.starts_with("pageview_consumer_lag{"));
        if m.get(sent) > Some(&0.0) && m.get(read) > Some(&0.0) && lag {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "nothing sent, read and lagging: {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        before["pageview_generator_send_latency_seconds_count"] > 0.0,
        "{before:#?}"
    );
    assert_eq!(before["pageview_generator_events_failed_total"], 0.0);
    // Long enough running for the throughput's first 1 s measure.
    std::thread::sleep(Duration::from_millis(1500));
    // The counts move while the page loads: what it shows lies between two scrapes.
    let dom = browse(serving.address);
    let after = serving.metrics();
    for (id, series) in [("generator-sent", sent), ("records", read)] {
        let shown = shown(&dom, id).unwrap_or_else(|| panic!("no {id} in {dom}"));
        assert!(
            before[series] <= shown && shown <= after[series],
            "{id}: {shown} not within {} … {}",
            before[series],
            after[series]
        );
    }
    assert_eq!(shown(&dom, "generator-failed"), Some(0.0));
    assert!(shown(&dom, "lag").is_some(), "lag from the group: {dom}");
    // Generated at 500 events/s: read at about that, certainly not at none or ten times it.
    let throughput = shown(&dom, "throughput").expect("a throughput while running");
    assert!(
        throughput > 0.0 && throughput < 5000.0,
        "{throughput} records/s"
    );
}

/// What kafka-exporter v1.9.0 (the image docker-compose.yml runs) exports, from its README.
const KAFKA_EXPORTER: [&str; 14] = [
    "kafka_brokers",
    "kafka_topic_partitions",
    "kafka_topic_partition_current_offset",
    "kafka_topic_partition_oldest_offset",
    "kafka_topic_partition_in_sync_replica",
    "kafka_topic_partition_leader",
    "kafka_topic_partition_leader_is_preferred",
    "kafka_topic_partition_replicas",
    "kafka_topic_partition_under_replicated_partition",
    "kafka_consumergroup_current_offset",
    "kafka_consumergroup_current_offset_sum",
    "kafka_consumergroup_lag",
    "kafka_consumergroup_lag_sum",
    "kafka_consumergroup_members",
];

/// The series names `text` (Prometheus text format) declares in its `# TYPE` lines.
fn declared(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes.iter().map(move |s| format!("{name}{s}"))
        })
        .collect()
}

/// Every series the processor and the generator export: a real processor's `/metrics`
/// after it has read a few records, and the registries for what only Kafka fills (lag,
/// the generator's sends).
fn exported() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = pageview();
    command
        .args(["process", "--input", "-", "--storage"])
        .arg(dir.path())
        .args(["--metrics-port", "0", "--metrics-host", "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut serving = Serving::spawn(command);
    let mut stdin = serving.child.stdin.take().unwrap();
    // Three events: a partition's clock, and so its watermark, needs three to confirm a time.
    let event = b"{\"user_id\":1,\"postcode\":\"E1\",\"webpage\":\"https://a\",\"timestamp\":1700000000000}\n";
    stdin.write_all(&event.repeat(3)).unwrap();
    stdin.write_all(b"not json\n").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = http_get(serving.address, "/metrics").1;
    // One observation sets the series one after another: a scrape may land between the
    // records read and the partition watermarks of the same observation.
    while !(text.contains("pageview_records_read_total 4")
        && text.contains("pageview_partition_watermark_seconds{"))
    {
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
        text = http_get(serving.address, "/metrics").1;
    }
    let mut names = declared(&text);
    use pageview::metrics::{GeneratorMetrics, PipelineMetrics, encode, registry};
    let mut registry = registry();
    let pipeline = PipelineMetrics::register(&mut registry);
    pipeline.observe_lag(&[(0, 0)]);
    pipeline.merged(&pageview::commit::Pass {
        merged_to: 0,
        horizon: pageview::commit::Horizon {
            to: None,
            held: Some(pageview::commit::Hold::Unclaimed { partition: 0 }),
        },
        rows: 0,
    });
    pageview::storage::RequestObserver::request(&*pipeline, "put", Duration::ZERO, false);
    GeneratorMetrics::register(&mut registry).delivered(Duration::from_millis(1));
    names.extend(declared(&encode(&registry)));
    names
}

#[test]
fn every_dashboard_queries_only_series_that_exist_in_valid_promql() {
    let ours = exported();
    assert!(
        ours.contains(&"pageview_consumer_lag".to_string()),
        "{ours:?}"
    );
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/grafana/dashboards");
    let name = regex::Regex::new(r"\b(?:pageview|kafka)_[a-z0-9_]+\b").unwrap();
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut uids = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        uids.push(dashboard["uid"].as_str().unwrap().to_string());
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{}", path.display());
        for panel in panels {
            let targets = panel["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "{}: {}",
                path.display(),
                panel["title"]
            );
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                for series in name.find_iter(expr).map(|m| m.as_str()) {
                    let known =
                        ours.iter().any(|o| o == series) || KAFKA_EXPORTER.contains(&series);
                    assert!(known, "{}: {series} is exported by nothing", path.display());
                }
                rules.push_str(&format!(
                    "      - record: dashboard:{}\n        expr: {}\n",
                    rules.matches("record:").count(),
                    serde_json::to_string(expr).unwrap()
                ));
            }
        }
    }
    uids.sort();
    assert_eq!(
        uids,
        ["kafka-overview", "pageview-generator", "pageview-pipeline"]
    );
    // promtool parses every query as it parses rules.
    let checked = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(checked.path(), rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(checked.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}
