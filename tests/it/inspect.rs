//! `pageview inspect` on what `process` wrote: every figure it prints agrees with the Parquet
//! files read back here, and bad input (a missing folder, a time with no window, a corrupt
//! file) fails with one line that names it. The same report from S3 is in s3.rs.

use std::path::Path;

use crate::common::*;
use pageview::tools::report::grouped;

/// Processes 30k events (five minutes of event time, with malformed and late ones) into a
/// folder under `dir` and returns it.
fn written(dir: &Path) -> std::path::PathBuf {
    written_as(dir, "out", &[])
}

/// The same into the folder `name`, with more `process` arguments.
fn written_as(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let input = dir.join("events.jsonl");
    generate_file(
        &input,
        &[
            "--events",
            "30k",
            "--rate",
            "100",
            "--start-time-ms",
            "1700000000000",
            "--seed",
            "3",
            "--malformed-share",
            "0.05",
            "--late-share",
            "0.02",
        ],
    );
    let storage = dir.join(name);
    let out = process(&input, &storage, extra);
    assert!(out.status.success(), "{}", stderr(&out));
    storage
}

fn inspect(args: &[&str]) -> String {
    let out = run(&[&["inspect"], args].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// `1,234` → 1234.
fn number(s: &str) -> u64 {
    s.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{s} is not a number"))
}

/// The postcode lines under the window heading that starts with `heading`: (postcode, count).
fn postcode_lines(report: &str, heading: &str) -> Vec<(String, i64)> {
    report
        .lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| l.starts_with("  ") && !l.starts_with("  …"))
        .map(|l| {
            let mut words = l.split_whitespace();
            let postcode = words.next().unwrap().to_string();
            (postcode, number(words.next().unwrap()) as i64)
        })
        .collect()
}

/// Most events first, ties by postcode.
fn busiest(counts: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut sorted = counts.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sorted
}

#[test]
fn the_report_agrees_with_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = written(dir.path());
    let root = storage.to_str().unwrap();
    let report = inspect(&["--storage", root, "--samples", "1"]);

    for (name, bucket) in [("raw", RAW), ("aggregated", AGGREGATED), ("dlq", DLQ)] {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line in {report}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], bucket);
        let files = parquet_files(&storage.join(bucket)).len() as u64;
        assert_eq!(
            (number(words[2]), number(words[3])),
            (files, rows(&storage, bucket) as u64),
            "{line}"
        );
    }

    // The three newest windows, each with its ten busiest postcodes.
    let windows = window_counts(&storage);
    assert!(windows.len() >= 5, "{windows:?}");
    assert!(
        report.contains("latest windows (3), newest first"),
        "{report}"
    );
    for (&start, counts) in windows.iter().rev().take(3) {
        let heading = utc(start);
        let events: i64 = counts.iter().map(|(_, n)| n).sum();
        let line = report
            .lines()
            .find(|l| l.starts_with(&heading))
            .unwrap_or_else(|| panic!("no window {heading} in {report}"));
        assert!(
            line.contains(&format!(
                " {} events, {} postcodes",
                grouped(events),
                counts.len()
            )),
            "{line}"
        );
        let mut top = busiest(counts);
        top.truncate(10);
        assert_eq!(postcode_lines(&report, &heading), top);
    }
    let oldest = windows.keys().next().unwrap();
    assert!(
        !report.contains(&utc(*oldest)),
        "only the latest three: {report}"
    );

    // Dead letters by reason, each with a sample of its payloads.
    let mut total = 0;
    let reasons: Vec<(String, u64)> = report
        .lines()
        .skip_while(|l| !l.starts_with("dead letters by reason"))
        .skip(1)
        .filter(|l| !l.starts_with("      "))
        .map(|l| {
            let (kind, count) = l.trim().split_once(' ').unwrap();
            (kind.to_string(), number(count.trim()))
        })
        .collect();
    assert!(reasons.len() >= 5, "{report}");
    for (kind, count) in &reasons {
        assert_eq!(*count, dead_letters_of(&storage, kind) as u64, "{kind}");
        total += count;
    }
    assert_eq!(total, rows(&storage, DLQ) as u64);
    let sample = report
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("missing_field"))
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('…');
    assert!(sample.starts_with("{\""), "a payload as it came: {sample}");
}

#[test]
fn a_delta_table_is_read_through_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let folders = written(dir.path());
    let tables = written_as(dir.path(), "tables", &["--table-format", "delta"]);
    // In the folder but in no commit: a file a crashed run left, which no reader of the
    // table sees (and which is no Parquet file at all).
    std::fs::write(
        tables.join(RAW).join("part-left-behind.parquet"),
        b"partial",
    )
    .unwrap();
    let from_folders = inspect(&["--storage", folders.to_str().unwrap()]);
    let from_tables = inspect(&["--storage", tables.to_str().unwrap()]);
    let without_first_line = |report: &str| report.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        without_first_line(&from_tables),
        without_first_line(&from_folders),
        "the same files, rows, windows and dead letters"
    );
}

#[test]
fn vacuum_deletes_only_files_no_version_needs_past_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let tables = written_as(dir.path(), "tables", &["--table-format", "delta"]);
    let before = inspect(&["--storage", tables.to_str().unwrap()]);
    let day = std::time::Duration::from_secs(86_400);
    let left = |name: &str, age: std::time::Duration| {
        let path = tables.join(RAW).join("dt=2023-11-14").join(name);
        std::fs::write(&path, b"partial").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        path
    };
    let old = left("part-crashed-long-ago.parquet", 8 * day);
    let recent = left("part-crashed-today.parquet", day / 24);
    let out = run(&["vacuum", "--storage", tables.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{RAW}: deleted 1 files")),
        "{}",
        stdout(&out)
    );
    assert!(!old.exists(), "in no version, older than 7 days");
    assert!(
        recent.exists(),
        "younger than the retention: a run may still commit it"
    );
    assert_eq!(
        inspect(&["--storage", tables.to_str().unwrap()]),
        before,
        "every file of the current version stays"
    );
    let folders = written(dir.path());
    let out = run(&["vacuum", "--storage", folders.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("not a Delta table"),
        "{}",
        stdout(&out)
    );
}

/// Dead letters leave the DLQ table `--dlq-retention-days` after they were added to it, as
/// S3's rule deletes them from a Parquet folder; vacuum deletes their files later.
#[test]
fn vacuum_expires_dead_letters_past_their_retention_from_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let tables = written_as(dir.path(), "tables", &["--table-format", "delta"]);
    let dead_letters = table_files(&tables, DLQ).unwrap();
    assert!(!dead_letters.is_empty());
    let raw = table_files(&tables, RAW).unwrap();
    // As if the run had been 100 days ago: its commits say when each file was added.
    let now_ms = pageview::generate::now_ms();
    let log = tables.join(DLQ).join("_delta_log");
    let added_at = regex::Regex::new(r#""modificationTime":\d+"#).unwrap();
    for entry in std::fs::read_dir(&log).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let aged = added_at
                .replace_all(
                    &std::fs::read_to_string(&path).unwrap(),
                    format!(r#""modificationTime":{}"#, now_ms - 100 * 86_400_000),
                )
                .into_owned();
            std::fs::write(&path, aged).unwrap();
        }
    }
    let storage = tables.to_str().unwrap();
    let out = run(&[
        "vacuum",
        "--storage",
        storage,
        "--dlq-retention-days",
        "120",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "{DLQ}: removed 0 files of dead letters older than 120 days"
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(table_files(&tables, DLQ).unwrap().len(), dead_letters.len());
    let out = run(&["vacuum", "--storage", storage]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "{DLQ}: removed {} files of dead letters older than 90 days",
            dead_letters.len()
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(table_files(&tables, DLQ).unwrap(), Vec::new(), "none left");
    for file in &dead_letters {
        assert!(
            tables.join(DLQ).join(&file.path).exists(),
            "kept for readers of older versions until the vacuum retention"
        );
    }
    assert_eq!(table_files(&tables, RAW).unwrap(), raw, "raw untouched");
}

#[test]
fn one_window_shows_every_postcode() {
    let dir = tempfile::tempdir().unwrap();
    let storage = written(dir.path());
    let windows = window_counts(&storage);
    let (&start, counts) = windows.iter().nth(1).unwrap();
    // Any time inside the window picks it: here 30 s in, as RFC 3339.
    let at = utc(start + 30_000).replace(" UTC", "Z").replace(' ', "T");
    let report = inspect(&["--storage", storage.to_str().unwrap(), "--window", &at]);
    assert!(!report.contains("latest windows"), "{report}");
    assert_eq!(postcode_lines(&report, &utc(start)), busiest(counts));

    let out = run(&[
        "inspect",
        "--storage",
        storage.to_str().unwrap(),
        "--window",
        "2001-01-01 00:00",
    ]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.starts_with("pageview: error: no window holds 2001-01-01 00:00:00 UTC: windows were written for dt=2023-11-14"),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn samples_come_from_whichever_file_holds_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("out");
    // Two runs, two DLQ files: the second holds a reason the first has not.
    for (name, lines) in [
        ("a", "not json\nnot json either\nstill not\n"),
        ("b", "{\"user_id\": 1}\n{\"user_id\": 2}\nnot json at all\n"),
    ] {
        let input = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&input, lines).unwrap();
        let out = process(&input, &storage, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let report = inspect(&["--storage", storage.to_str().unwrap(), "--samples", "2"]);
    let reasons = report.split_once("dead letters by reason (6)\n").unwrap().1;
    assert_eq!(
        reasons,
        "  invalid_json             4\n      not json\n      not json either\n  missing_field            2\n      {\"user_id\": 1}\n      {\"user_id\": 2}\n"
    );
}

#[test]
fn bad_input_fails_with_one_line_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let out = run(&["inspect", "--storage", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing-here is not a folder"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists(), "inspect creates nothing");

    let out = run(&["inspect", "--window", "soon"]);
    assert!(
        stderr(&out).contains("\"soon\" is not a time"),
        "{}",
        stderr(&out)
    );

    let storage = written(dir.path());
    let corrupt = storage
        .join(AGGREGATED)
        .join("dt=2023-11-14/part-x-1-2.parquet");
    std::fs::write(&corrupt, b"not parquet at all").unwrap();
    let out = run(&["inspect", "--storage", storage.to_str().unwrap()]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.starts_with(&format!("pageview: error: {AGGREGATED}/dt=2023-11-14/part-x-1-2.parquet is not a readable aggregated file:")),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");

    // A Parquet file of another shape: named, not a panic.
    std::fs::remove_file(&corrupt).unwrap();
    let foreign = storage.join(DLQ).join("part-foreign.parquet");
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("payload", arrow_schema::DataType::Binary, false),
        arrow_schema::Field::new("error_kind", arrow_schema::DataType::Int64, false),
    ]));
    let batch = arrow_array::RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(arrow_array::BinaryArray::from(vec![&b"x"[..]])),
            std::sync::Arc::new(arrow_array::Int64Array::from(vec![7])),
        ],
    )
    .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&foreign).unwrap(),
        schema,
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let out = run(&["inspect", "--storage", storage.to_str().unwrap()]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.starts_with(&format!(
            "pageview: error: {DLQ}/part-foreign.parquet is not a readable dlq file:"
        )),
        "{error}"
    );
    assert!(
        error.contains("its error_kind is Int64, not Utf8"),
        "{error}"
    );
}

/// `2023-11-14 22:13:00 UTC`, the way the report writes a window's start.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}
