//! The datasets open in pyarrow and DuckDB with no custom code, with the expected types and
//! the same numbers as the pipeline reports; as Delta tables, in the `deltalake` package and
//! polars, with the same rows.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[test]
fn delta_tables_hold_row_for_row_what_the_parquet_folders_hold() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    generate_file(
        &input,
        &[
            "--events",
            "60000",
            "--seed",
            "9",
            "--start-time-ms",
            "1700000000000",
            "--rate",
            "20",
            "--malformed-share",
            "0.03",
            "--late-share",
            "0.01",
        ],
    );
    let (parquet, delta) = (dir.path().join("parquet"), dir.path().join("delta"));
    // Six runs, each on a sixth of the input, append to both layouts: a table then holds
    // several files per partition from many commits (files also roll every 100 ms).
    let bytes = std::fs::read(&input).unwrap();
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    for (i, chunk) in lines.chunks(lines.len().div_ceil(6)).enumerate() {
        let part = dir.path().join(format!("part{i}.jsonl"));
        std::fs::write(&part, chunk.concat()).unwrap();
        let processed = process(&part, &parquet, &[]);
        assert!(processed.status.success(), "{}", stderr(&processed));
        let processed = process(
            &part,
            &delta,
            &["--table-format", "delta", "--file-max-age-ms", "100"],
        );
        assert!(processed.status.success(), "{}", stderr(&processed));
    }
    assert!(delta.join(RAW).join("_delta_log").is_dir());

    let same_rows = || read_delta(&parquet, &delta, None);
    same_rows();

    // Compaction folds each partition's files into one, and readers see the same rows.
    let current = |bucket: &str| table_files(&delta, bucket).unwrap();
    let before = current(RAW);
    let per_partition = |files: &[pageview::storage::Listed]| {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for f in files {
            *counts
                .entry(f.path.rsplit_once('/').unwrap().0.to_string())
                .or_default() += 1;
        }
        counts
    };
    let counts = per_partition(&before);
    let several: Vec<usize> = counts.values().copied().filter(|&n| n > 1).collect();
    assert!(!several.is_empty(), "{counts:?}");
    let (files, partitions) = (several.iter().sum::<usize>(), several.len());
    let compact = || {
        let out = pageview()
            .args(["compact", "--storage"])
            .arg(&delta)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // A reader that opened the tables before the compaction reads them whole after it.
    let mut said = String::new();
    read_delta(&parquet, &delta, Some(&mut || said = compact()));
    assert!(
        said.contains(&format!(
            "{RAW}: {files} small files rewritten into {partitions}"
        )),
        "{said}"
    );
    let after = per_partition(&current(RAW));
    assert!(after.values().all(|&n| n == 1), "{after:?}");
    assert_eq!(after.len(), counts.len());
    same_rows();
    // Vacuum keeps what a reader of an older version needs.
    for file in &before {
        assert!(delta.join(RAW).join(&file.path).is_file(), "{}", file.path);
    }
    let again = compact();
    assert!(
        again.contains(&format!("{RAW}: 0 small files rewritten into 0")),
        "{again}"
    );
}

/// Compaction while `process` runs: each hour the watermark has passed is packed into one
/// file while the input is still open (a pass every 200 ms here), and the tables hold row for
/// row what the folders hold.
#[test]
fn a_running_processor_compacts_each_hour_the_watermark_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    // Three hours of event time from 22:00, an event a second.
    generate_file(
        &input,
        &[
            "--events",
            "10800",
            "--seed",
            "5",
            "--start-time-ms",
            "1699999200000",
            "--rate",
            "1",
            "--malformed-share",
            "0.02",
            "--late-share",
            "0.01",
        ],
    );
    let (parquet, delta) = (dir.path().join("parquet"), dir.path().join("delta"));
    // The same bytes through stdin, so that dead letters name the same input.
    let reference = pageview()
        .args(["process", "--input", "-", "--storage"])
        .arg(&parquet)
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(reference.status.success(), "{}", stderr(&reference));
    let log = dir.path().join("process.log");
    let mut processor = pageview()
        .args(["process", "--input", "-", "--storage"])
        .arg(&delta)
        .args(["--table-format", "delta", "--file-max-age-ms", "50"])
        .args(["--compact-interval-ms", "200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = processor.stdin.take().unwrap();
    let bytes = std::fs::read(&input).unwrap();
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let files_of = |partition: &str| {
        table_files(&delta, RAW).map_or(0, |files| {
            files
                .iter()
                .filter(|f| f.path.starts_with(&format!("{partition}/")))
                .count()
        })
    };
    let hours = ["dt=2023-11-14/event_hour=22", "dt=2023-11-14/event_hour=23"];
    // Waits for `what` of `hour`'s file count; a loaded machine may commit late.
    let wait_for = |hour: &str, what: &str, holds: &dyn Fn(usize) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !holds(files_of(hour)) {
            assert!(
                std::time::Instant::now() < deadline,
                "{hour} holds {} files, not {what}: {}",
                files_of(hour),
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for (n, hour) in lines.chunks(3600).enumerate() {
        // In pieces a file roll apart: several files per hour.
        for (p, piece) in hour.chunks(400).enumerate() {
            stdin.write_all(&piece.concat()).unwrap();
            stdin.flush().unwrap();
            if n == 0 && p == 0 {
                // Only a processor that is reading by now splits the hour into files.
                wait_for(hours[0], "any", &|files| files > 0);
            }
            std::thread::sleep(Duration::from_millis(120));
        }
        if n == 0 {
            wait_for(hours[0], "several", &|files| files > 1);
            continue;
        }
        // The hour before is closed by this one's events.
        wait_for(hours[n - 1], "one", &|files| files == 1);
    }
    drop(stdin);
    let status = processor.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {said}");
    assert!(said.contains("compacted"), "{said}");
    read_delta(&parquet, &delta, None);
}

/// Reads the tables under `delta` with the deltalake package and polars, and checks that
/// they hold row for row what the folders under `parquet` hold; with `between`, the tables
/// are opened, then `between` runs, then they are read.
fn read_delta(parquet: &Path, delta: &Path, between: Option<&mut dyn FnMut()>) {
    let mut reader = Command::new(readers_python());
    reader
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_delta.py"))
        .arg(parquet)
        .arg(delta)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if between.is_some() {
        reader.arg("--hold").stdin(Stdio::piped());
    }
    let mut reader = reader.spawn().unwrap();
    if let Some(between) = between {
        let mut opened = String::new();
        BufReader::new(reader.stdout.as_mut().unwrap())
            .read_line(&mut opened)
            .unwrap();
        assert_eq!(opened, "opened\n", "the reader could not open the tables");
        between();
        writeln!(reader.stdin.take().unwrap()).unwrap();
    }
    let output = reader.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["raw-events"], rows(parquet, RAW));
    assert_eq!(got["aggregated"], rows(parquet, AGGREGATED));
    assert_eq!(got["dlq"], rows(parquet, DLQ));
}

#[test]
fn pyarrow_and_duckdb_read_every_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let out = dir.path().join("out");
    generate_file(
        &input,
        &[
            "--events",
            "100000",
            "--seed",
            "5",
            "--start-time-ms",
            "1700000000000",
            "--rate",
            "20",
            "--malformed-share",
            "0.05",
            "--late-share",
            "0.01",
        ],
    );
    let processed = process(&input, &out, &[]);
    assert!(processed.status.success(), "{}", stderr(&processed));

    let output = Command::new(readers_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/read_outputs.py"
        ))
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let (raw, agg, dlq) = (rows(&out, RAW), rows(&out, AGGREGATED), rows(&out, DLQ));
    assert!(raw > 90_000 && agg > 0 && dlq > 5_000);

    let py = &got["pyarrow"];
    assert_eq!(py["raw_rows"], raw);
    assert_eq!(py["agg_rows"], agg);
    assert_eq!(py["dlq_rows"], dlq);
    assert_eq!(py["raw_types"]["user_id"], "int64");
    assert_eq!(py["raw_types"]["postcode"], "string");
    assert_eq!(py["raw_types"]["timestamp"], "int64");
    assert_eq!(py["agg_types"]["window_start"], "timestamp[ms, tz=UTC]");
    assert_eq!(py["agg_types"]["pageview_count"], "int64");
    assert_eq!(py["dlq_types"]["payload"], "binary");

    let duck = &got["duckdb"];
    assert_eq!(duck["raw_rows"], raw);
    // 100k events at 20/s of simulated time span about 83 minutes: two or three hours.
    assert!(
        (2..=3).contains(&duck["raw_partitions"].as_u64().unwrap()),
        "{duck}"
    );
    assert_eq!(duck["agg_rows"], agg);
    assert_eq!(duck["agg_window_type"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(duck["agg_count_sum"], py["agg_count_sum"]);
    let by_kind = duck["dlq_by_kind"].as_object().unwrap();
    assert_eq!(
        by_kind.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        dlq as u64
    );
    assert_eq!(by_kind.len(), 9, "every error_kind appears: {by_kind:?}");
    // Every valid event is in raw; the on-time ones are counted in windows.
    let late = by_kind["late_event"].as_u64().unwrap();
    assert_eq!(py["agg_count_sum"].as_u64().unwrap(), raw as u64 - late);
}

/// Runs the README's SQL and Python snippets in `workdir`; each query with its rows. The
/// Delta snippets read `tables/`, which the README's `process --table-format delta` writes:
/// made here from a small input when `workdir` has none.
fn readme_snippets(workdir: &Path) -> Vec<(String, Vec<Vec<String>>)> {
    let tables = workdir.join("tables");
    if !tables.exists() {
        let input = workdir.join("tables-input.jsonl");
        generate_file(&input, &["--events", "3000", "--seed", "4", "--rate", "50"]);
        let processed = process(&input, &tables, &["--table-format", "delta"]);
        assert!(processed.status.success(), "{}", stderr(&processed));
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(readers_python())
        .arg(format!("{root}/tests/readme_snippets.py"))
        .arg(format!("{root}/README.md"))
        .arg(workdir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(got["python_snippets"].as_u64().unwrap() >= 1, "{got}");
    let queries: Vec<(String, Vec<Vec<String>>)> = got["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let rows = q["rows"].as_array().unwrap().iter();
            let rows = rows.map(|r| serde_json::from_value(r.clone()).unwrap());
            (q["query"].as_str().unwrap().to_string(), rows.collect())
        })
        .collect();
    assert!(queries.len() >= 3, "{queries:?}");
    queries
}

/// The rows of the README query that reads the dead letters.
fn dead_letter_rows(queries: &[(String, Vec<Vec<String>>)]) -> &[Vec<String>] {
    let (_, rows) = queries
        .iter()
        .find(|(q, _)| q.contains("dlq"))
        .expect("the README queries the dead letters");
    rows
}

#[test]
fn the_readme_snippets_work_on_what_its_first_command_writes() {
    let dir = tempfile::tempdir().unwrap();
    // `pageview run` exactly as the README's first command runs it, from the folder it
    // writes `pageview-data` into.
    let mut run = pageview();
    run.arg("run").current_dir(dir.path());
    stopped_after(run, Duration::from_secs(6));
    let data = dir.path().join("pageview-data");
    assert!(
        dead_letters_of(&data, "invalid_utf8") > 0,
        "a default run writes payloads that are not UTF-8, which the DLQ query must show"
    );

    let queries = readme_snippets(dir.path());
    let kinds: Vec<&str> = dead_letter_rows(&queries)
        .iter()
        .map(|row| row[0].as_str())
        .collect();
    assert!(kinds.contains(&"invalid_utf8"), "{kinds:?}");
    for (query, rows) in &queries {
        assert!(!rows.is_empty(), "no rows from {query}");
    }
}

#[test]
fn the_readme_snippets_work_on_a_run_without_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    generate_file(&input, &["--events", "5000", "--seed", "3", "--rate", "50"]);
    let processed = process(&input, &dir.path().join("pageview-data"), &[]);
    assert!(processed.status.success(), "{}", stderr(&processed));
    let data = dir.path().join("pageview-data");
    assert_eq!(rows(&data, DLQ), 0);

    let queries = readme_snippets(dir.path());
    assert!(dead_letter_rows(&queries).is_empty());

    // A second run that dead-letters something: its file sits beside the empty one.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, b"not json\n").unwrap();
    let processed = process(&bad, &data, &[]);
    assert!(processed.status.success(), "{}", stderr(&processed));
    let queries = readme_snippets(dir.path());
    assert_eq!(dead_letter_rows(&queries)[0][..2], ["invalid_json", "1"]);
}
