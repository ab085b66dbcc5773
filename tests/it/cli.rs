//! The command line: every error path gives one clear line and a non-zero exit, leaving
//! nothing behind; generate, process and run work together as documented.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

#[test]
fn a_missing_input_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = process(Path::new("/no/such/events.jsonl"), &out, &[]);
    assert_one_line_error(&output, "/no/such/events.jsonl");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        !out.exists(),
        "no output folder for a run that read nothing"
    );
}

#[test]
fn a_directory_as_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = process(dir.path(), &out, &[]);
    assert_one_line_error(&output, "is a directory");
    assert!(!out.exists());
}

#[test]
fn an_unwritable_storage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{}\n").unwrap();
    // A regular file where the storage folder should be.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let storage = blocker.join("out");
    let output = process(&input, &storage, &[]);
    assert_one_line_error(&output, storage.to_str().unwrap());
    assert!(stderr(&output).contains("not writable"));
}

#[test]
fn bad_flag_values_name_the_flag() {
    let cases: [(&[&str], &str); 11] = [
        (&["generate", "-o", "-", "--rate", "-1"], "--rate"),
        (
            &["generate", "-o", "-", "--simulated-time", "--speedup", "0"],
            "--speedup",
        ),
        (
            &[
                "process",
                "--input",
                "x",
                "--storage",
                "y",
                "--compact-interval-ms",
                "soon",
            ],
            "--compact-interval-ms",
        ),
        (
            &[
                "process",
                "--input",
                "x",
                "--storage",
                "y",
                "--target-file-mib",
                "0",
            ],
            "--target-file-mib",
        ),
        (&["generate", "-o", "-", "--rate", "abc"], "--rate"),
        (
            &["generate", "-o", "-", "--malformed-share", "2"],
            "--malformed-share",
        ),
        (&["generate", "-o", "-", "--events", "ten"], "--events"),
        (
            &[
                "generate",
                "-o",
                "-",
                "--malformed-share",
                "0.8",
                "--late-share",
                "0.5",
            ],
            "--late-share",
        ),
        (
            &[
                "process",
                "--input",
                "x",
                "--storage",
                "y",
                "--window-size-seconds",
                "0",
            ],
            "--window-size-seconds",
        ),
        (
            &[
                "process",
                "--input",
                "x",
                "--storage",
                "y",
                "--file-max-bytes",
                "10",
            ],
            "--file-max-bytes",
        ),
        (
            &[
                "process",
                "--input",
                "x",
                "--storage",
                "y",
                "--compression",
                "brotli",
            ],
            "--compression",
        ),
    ];
    for (args, flag) in cases {
        let output = run(args);
        assert_one_line_error(&output, flag);
    }
    // Clap names an argument a flag needs on the line after its own.
    let output = run(&["generate", "-o", "-", "--speedup", "60"]);
    assert_one_line_error(&output, "required arguments were not provided");
    assert!(stderr(&output).contains("  --simulated-time"));
    let output = run(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn bad_settings_from_the_environment_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = process_stdin(&out)
        .env("DLQ_BUCKET", "Not_A_Bucket")
        .output()
        .unwrap();
    assert_one_line_error(&output, "DLQ_BUCKET");
    assert!(!out.exists());
    let output = pageview()
        .args(["generate", "-o", "-", "--events", "1"])
        .env("EVENT_RATE", "fast")
        .output()
        .unwrap();
    assert_one_line_error(&output, "--rate");
}

#[test]
fn the_bucket_variables_choose_the_folders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut command = process_stdin(&out);
    command
        .env("RAW_EVENTS_BUCKET", "my-raw")
        .env("ENVIRONMENT", "prod");
    let output = feed(command, b"{\"user_id\": 1, \"postcode\": \"E1\", \"webpage\": \"https://x\", \"timestamp\": 1700000000000}\nnot json\n");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(parquet_files(&out.join("my-raw")).len(), 1);
    assert_eq!(
        parquet_files(&out.join("pageview-pipeline-prod-dlq")).len(),
        1
    );
    assert_eq!(
        parquet_files(&out.join("pageview-pipeline-prod-aggregated")).len(),
        1
    );
}

#[test]
fn generate_is_reproducible_and_pipes_into_process() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "generate",
        "-o",
        "-",
        "--events",
        "5000",
        "--seed",
        "3",
        "--simulated-time",
        "--start-time-ms",
        "1700000000000",
        "--rate",
        "100",
        "--malformed-share",
        "0.1",
    ];
    let first = run(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(first.stdout, run(&args).stdout, "same seed, same bytes");
    assert_eq!(first.stdout.iter().filter(|&&b| b == b'\n').count(), 5000);

    let out = dir.path().join("out");
    let output = feed(process_stdin(&out), &first.stdout);
    assert!(output.status.success());
    let summary = stdout(&output);
    assert!(summary.starts_with("5000 records"), "{summary}");
    let raw_rows = rows(&out, RAW);
    let dlq_rows = rows(&out, DLQ);
    assert_eq!(
        raw_rows + dlq_rows,
        5000,
        "no late events here, so raw + DLQ = input"
    );
    assert!((300..700).contains(&dlq_rows), "{dlq_rows}");
    // 5000 events at 100/s of simulated time span 50 s: one or two windows.
    assert!(!read_dataset(&out, AGGREGATED).is_empty());
}

#[test]
fn run_with_a_bounded_simulated_stream_writes_all_three_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = run(&[
        "run",
        "--events",
        "200k",
        "--simulated-time",
        "--seed",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = stdout(&output);
    assert!(summary.contains("200000 records"), "{summary}");
    let raw_rows = rows(&data, RAW);
    let dlq_rows = rows(&data, DLQ);
    let late = dead_letters_of(&data, "late_event");
    assert!(late > 0, "run's defaults include late events");
    assert_eq!(raw_rows + dlq_rows - late, 200_000);
    // 200k events at 1000/s of simulated time are 200 s: at least three windows.
    let windows = rows(&data, AGGREGATED);
    assert!(windows >= 3 * 15, "{windows}");
    assert_no_staging_leftovers(&data);
}

#[test]
fn sigterm_stops_run_after_flushing_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut run = pageview();
    run.args([
        "run",
        "--rate",
        "2000",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let output = stopped_after(run, Duration::from_millis(1500));
    let summary = stdout(&output);
    let records: usize = summary
        .lines()
        .find_map(|l| l.split(" records in ").next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no record count in {summary}"));
    assert!(records > 1000, "{summary}");
    let raw_rows = rows(&data, RAW);
    let dlq_rows = rows(&data, DLQ);
    let late = dead_letters_of(&data, "late_event");
    assert_eq!(
        raw_rows + dlq_rows - late,
        records,
        "every generated event is written"
    );
    assert!(
        !read_dataset(&data, AGGREGATED).is_empty(),
        "open windows are flushed on stop"
    );
    assert_no_staging_leftovers(&data);
}

#[test]
fn files_of_a_slow_stream_are_published_by_age_before_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = process_stdin(&out)
        .args(["--file-max-age-ms", "200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let line = b"{\"user_id\": 1, \"postcode\": \"E1\", \"webpage\": \"https://x\", \"timestamp\": 1700000000000}\n";
    stdin.write_all(line).unwrap();
    stdin.write_all(b"oops\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    // The next record finds both files older than the limit, and publishes them.
    stdin.write_all(line).unwrap();
    stdin.flush().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while parquet_files(&out).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let published = parquet_files(&out);
    assert_eq!(
        published.len(),
        2,
        "raw and DLQ files while the stream is open: {published:?}"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert_eq!(rows(&out, RAW), 2);
    assert_eq!(rows(&out, DLQ), 1);
}

#[test]
fn log_lines_are_json_on_request_and_filtered_by_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let generate = || {
        let mut command = pageview();
        command.args([
            "generate",
            "-o",
            out.to_str().unwrap(),
            "--events",
            "10",
            "--simulated-time",
        ]);
        command
    };
    let json = generate().env("LOG_FORMAT", "json").output().unwrap();
    assert!(json.status.success());
    let line: serde_json::Value = serde_json::from_str(stderr(&json).trim()).unwrap();
    assert_eq!(line["level"], "INFO");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .starts_with("wrote 10 events to"),
        "{line}"
    );
    let text = generate().output().unwrap();
    assert!(stderr(&text).starts_with("pageview: wrote 10 events to"));
    let quiet = generate().env("LOG_LEVEL", "warn").output().unwrap();
    assert_eq!(stderr(&quiet), "");
    let bad = generate().env("LOG_LEVEL", "[{").output().unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid LOG_LEVEL"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn a_real_time_generator_says_what_it_does_and_for_how_long() {
    let output = run(&["generate", "-o", "-", "--rate", "40", "--events", "10"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), 10);
    assert_eq!(
        stderr(&output),
        "pageview: generating 40 events/s in real time to stdout: 10 events take 0.2 s\n"
    );
    let simulated = run(&["generate", "-o", "-", "--events", "10", "--simulated-time"]);
    assert_eq!(
        stderr(&simulated),
        "",
        "simulated time does not wait: nothing to say"
    );
}

#[test]
fn bench_says_how_far_it_is_while_its_children_run() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("bench");
    let out = run(&[
        "bench",
        "--sizes",
        "2k,6k",
        "--repeat",
        "1",
        "--threads",
        "1,2",
        "--dir",
        bench.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Not on a terminal: a line per child, its share of the work counted in events read
    // (the time left varies, so it is cut off here).
    let progress: Vec<String> = stderr(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("bench: "))
        .map(|l| {
            let (share, what) = l.split_once(" | ").unwrap();
            format!("{} | {what}", share.split(',').next().unwrap())
        })
        .collect();
    assert_eq!(
        progress,
        [
            "0% of 24.0k events' work | parse-only 2000",
            "8% of 24.0k events' work | process 2000 --threads 1",
            "17% of 24.0k events' work | process 2000 --threads 2",
            "25% of 24.0k events' work | parse-only 6000",
            "50% of 24.0k events' work | process 6000 --threads 1",
            "75% of 24.0k events' work | process 6000 --threads 2",
        ]
    );
    // A row per size and thread count.
    let table = stdout(&out);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with("| 2000 |") || l.starts_with("| 6000 |"))
        .map(|l| l.split(" | ").take(2).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["| 2000", "1"],
            ["| 2000", "2"],
            ["| 6000", "1"],
            ["| 6000", "2"]
        ],
        "{table}"
    );
}

#[test]
fn a_delta_table_of_other_columns_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    generate_file(&input, &["--events", "2000", "--seed", "2"]);
    let tables = dir.path().join("tables");
    let out = process(&input, &tables, &["--table-format", "delta"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The raw table where the aggregated one belongs.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::rename(tables.join(RAW), other.join(AGGREGATED)).unwrap();
    let log = other.join(AGGREGATED).join("_delta_log");
    let versions = std::fs::read_dir(&log).unwrap().count();
    let out = process(&input, &other, &["--table-format", "delta"]);
    assert_one_line_error(&out, "is a Delta table of columns");
    assert!(stderr(&out).contains(AGGREGATED), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&log).unwrap().count(),
        versions,
        "nothing committed to it"
    );
}

#[test]
fn compact_on_parquet_folders_is_refused_and_makes_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    generate_file(&input, &["--events", "2000", "--seed", "2"]);
    let lake = dir.path().join("lake");
    let out = process(&input, &lake, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = pageview()
        .args(["compact", "--storage"])
        .arg(&lake)
        .output()
        .unwrap();
    assert_one_line_error(&out, "no Delta table in");
    assert!(stderr(&out).contains(RAW), "{}", stderr(&out));
    for bucket in [RAW, AGGREGATED, DLQ] {
        assert!(!lake.join(bucket).join("_delta_log").exists(), "{bucket}");
    }
}
