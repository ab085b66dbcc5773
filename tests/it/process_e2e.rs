//! `pageview process` end to end: a file of valid, malformed (every class), late and
//! out-of-order records in; the Parquet read back and compared with expectations computed
//! here, independently of the pipeline's code.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_schema::{DataType, TimeUnit};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// 20 minutes before an hour boundary, so the input spans two raw partitions.
const BASE: i64 = 1_700_002_800_000 - 20 * MINUTE;
const VALID: usize = 150_000;

/// What the pipeline must do with one input line.
enum Expect {
    Raw {
        row: (i64, String, String, i64),
        counted: bool,
    },
    Dead(&'static str),
}

/// The test's own deterministic randomness (a 64-bit LCG), independent of the generator.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const MALFORMED: [(&[u8], &str); 12] = [
    (b"{\"user_id\": 1, \"postcode\": \"SW19\"", "invalid_json"),
    (b"", "invalid_json"),
    (b"null", "invalid_json"),
    (b"[{\"user_id\": 1}]", "invalid_json"),
    (b"{\"user_id\": 1, \"postcode\": \"S\xffW\", \"webpage\": \"https://x\", \"timestamp\": 1700000000000}", "invalid_utf8"),
    (b"{\"user_id\": 1, \"postcode\": \"SW19\", \"webpage\": \"https://x\"}", "missing_field"),
    (b"{\"user_id\": \"12\", \"postcode\": \"SW19\", \"webpage\": \"https://x\", \"timestamp\": 1700000000000}", "wrong_type"),
    (b"{\"user_id\": 1.5e3, \"postcode\": \"SW19\", \"webpage\": \"https://x\", \"timestamp\": 1700000000000}", "wrong_type"),
    (b"{\"user_id\": 0, \"postcode\": \"SW19\", \"webpage\": \"https://x\", \"timestamp\": 1700000000000}", "invalid_user_id"),
    (b"{\"user_id\": 5, \"postcode\": \"sw19\", \"webpage\": \"https://x\", \"timestamp\": 1700000000000}", "invalid_postcode"),
    (b"{\"user_id\": 5, \"postcode\": \"SW19\", \"webpage\": \"ftp://x\", \"timestamp\": 1700000000000}", "invalid_webpage"),
    (b"{\"user_id\": 5, \"postcode\": \"SW19\", \"webpage\": \"https://x\", \"timestamp\": 1700000000}", "invalid_timestamp"),
];

fn valid_line(user_id: i64, postcode: &str, webpage: &str, ts: i64) -> Vec<u8> {
    format!(r#"{{"user_id": {user_id}, "postcode": "{postcode}", "webpage": "{webpage}", "timestamp": {ts}}}"#)
        .into_bytes()
}

/// Lines and what must become of each: out-of-order valid events (up to 3 s, inside the 5 s
/// bound), late events 10 minutes back, every malformed class, a CRLF line and escapes.
fn input() -> Vec<(Vec<u8>, Expect)> {
    let postcodes = ["SW19", "E1", "W1", "N1", "SE1", "AB12CD34EF"];
    let pages = [
        "https://www.website.com/index.html",
        "http://b.example/p?q=1",
    ];
    let mut rng = Lcg(7);
    let mut lines = Vec::new();
    for i in 0..VALID {
        let ts = BASE + 16 * i as i64 - rng.below(3_000) as i64;
        let user_id = 1 + rng.below(100_000) as i64;
        let postcode = postcodes[rng.below(postcodes.len() as u64) as usize];
        let webpage = pages[rng.below(2) as usize];
        let row = (user_id, postcode.to_string(), webpage.to_string(), ts);
        lines.push((
            valid_line(user_id, postcode, webpage, ts),
            Expect::Raw { row, counted: true },
        ));
        if i >= 50_000 && i % 5_000 == 0 {
            let late = ts - 10 * MINUTE;
            let row = (42, "L1".to_string(), pages[0].to_string(), late);
            lines.push((
                valid_line(42, "L1", pages[0], late),
                Expect::Raw {
                    row,
                    counted: false,
                },
            ));
        }
        if i % 997 == 0 {
            let (bytes, kind) = MALFORMED[(i / 997) % MALFORMED.len()];
            lines.push((bytes.to_vec(), Expect::Dead(kind)));
        }
        if i == 2_000 {
            // A clock set to the last valid day: far ahead of the clock this runs under.
            let ahead = valid_line(8, "E1", pages[0], 4_102_444_800_000);
            lines.push((ahead, Expect::Dead("future_timestamp")));
        }
        if i == 1_000 {
            let mut crlf = valid_line(9, "E1", pages[0], ts);
            crlf.push(b'\r');
            let row = (9, "E1".to_string(), pages[0].to_string(), ts);
            lines.push((crlf, Expect::Raw { row, counted: true }));
            let escaped = format!(
                r#"{{"extra": [1], "webpage": "https:\/\/x", "postcode": "E\u0031", "timestamp": {ts}, "user_id": 10}}"#
            );
            let row = (10, "E1".to_string(), "https://x".to_string(), ts);
            lines.push((escaped.into_bytes(), Expect::Raw { row, counted: true }));
        }
    }
    lines
}

fn write_input(path: &Path, lines: &[(Vec<u8>, Expect)]) {
    let mut bytes = Vec::new();
    for (line, _) in lines {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn every_record_lands_exactly_where_the_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("events.jsonl");
    let out = dir.path().join("out");
    let lines = input();
    write_input(&input_path, &lines);

    let output = process(&input_path, &out, &["--file-max-bytes", "1024"]);
    assert!(output.status.success(), "{}", stderr(&output));

    // Expectations, computed from the labels alone.
    let mut want_raw = Vec::new();
    let mut want_windows: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let mut want_dlq = Vec::new();
    for (n, (bytes, expect)) in lines.iter().enumerate() {
        let line = n as i64 + 1;
        match expect {
            Expect::Raw { row, counted } => {
                want_raw.push(row.clone());
                if *counted {
                    *want_windows
                        .entry((row.3.div_euclid(MINUTE) * MINUTE, row.1.clone()))
                        .or_default() += 1;
                } else {
                    want_dlq.push((line, "late_event".to_string(), bytes.clone()));
                }
            }
            Expect::Dead(kind) => want_dlq.push((line, kind.to_string(), bytes.clone())),
        }
    }
    want_raw.sort();
    want_dlq.sort();
    let kinds: std::collections::BTreeSet<_> = want_dlq.iter().map(|d| d.1.clone()).collect();
    assert_eq!(
        kinds.len(),
        10,
        "the input covers every error_kind: {kinds:?}"
    );

    // Raw: every valid record once, each file in the partition of its rows' event hour.
    let mut got_raw = Vec::new();
    let raw = read_dataset(&out, RAW);
    let raw_files: std::collections::BTreeSet<_> = raw.iter().map(|(f, _)| f.clone()).collect();
    assert!(
        raw_files.len() >= 4,
        "size rolls and two hours give several files: {raw_files:?}"
    );
    for (file, batch) in &raw {
        let user_id = batch.column(0).as_primitive::<Int64Type>();
        let postcode = batch.column(1).as_string::<i32>();
        let webpage = batch.column(2).as_string::<i32>();
        let ts = batch.column(3).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let t = ts.value(i);
            let hour = chrono::DateTime::from_timestamp_millis(t.div_euclid(HOUR) * HOUR).unwrap();
            let partition = hour.format("dt=%Y-%m-%d/event_hour=%H").to_string();
            assert!(
                file.starts_with(&partition),
                "{file:?} holds a row of {partition}"
            );
            got_raw.push((
                user_id.value(i),
                postcode.value(i).to_string(),
                webpage.value(i).to_string(),
                t,
            ));
        }
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("part-events-") && name.ends_with(".parquet"),
            "{name}"
        );
    }
    got_raw.sort();
    assert_eq!(got_raw.len(), want_raw.len());
    assert!(
        got_raw == want_raw,
        "raw rows differ from the valid records"
    );

    // DLQ: every malformed and late record once, byte for byte, with file and line.
    let mut got_dlq = Vec::new();
    for (_, batch) in read_dataset(&out, DLQ) {
        let payload = batch.column(0).as_binary::<i32>();
        let kind = batch.column(1).as_string::<i32>();
        let message = batch.column(2).as_string::<i32>();
        let file = batch.column(3).as_string::<i32>();
        let line = batch.column(4).as_primitive::<Int64Type>();
        assert_eq!(
            batch.column(5).null_count(),
            batch.num_rows(),
            "no topic for a file"
        );
        assert_eq!(batch.column(6).null_count(), batch.num_rows());
        for i in 0..batch.num_rows() {
            assert_eq!(file.value(i), input_path.to_str().unwrap());
            assert!(!message.value(i).is_empty());
            got_dlq.push((
                line.value(i),
                kind.value(i).to_string(),
                payload.value(i).to_vec(),
            ));
        }
    }
    got_dlq.sort();
    assert_eq!(got_dlq.len(), want_dlq.len());
    assert!(
        got_dlq == want_dlq,
        "DLQ rows differ from the malformed and late records"
    );

    // Aggregated: one row per (window, postcode), counts of on-time events only.
    let mut got_windows = BTreeMap::new();
    for (file, batch) in read_dataset(&out, AGGREGATED) {
        assert_eq!(
            batch.schema().field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        let start = batch.column(0).as_primitive::<TimestampMillisecondType>();
        let end = batch.column(1).as_primitive::<TimestampMillisecondType>();
        let postcode = batch.column(2).as_string::<i32>();
        let count = batch.column(3).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            assert_eq!(end.value(i), start.value(i) + MINUTE);
            let day = chrono::DateTime::from_timestamp_millis(start.value(i)).unwrap();
            assert!(file.starts_with(day.format("dt=%Y-%m-%d").to_string()));
            let key = (start.value(i), postcode.value(i).to_string());
            assert!(
                got_windows.insert(key, count.value(i)).is_none(),
                "a window row twice"
            );
        }
    }
    assert_eq!(got_windows, want_windows);

    assert_no_staging_leftovers(&out);
    let summary = stdout(&output);
    assert!(
        summary.contains(&format!("{} records", lines.len())),
        "{summary}"
    );
}

/// The same files, names and bytes, from two runs, and from any number of threads: lines
/// are validated on the workers and files encoded there, but routed in input order, and a
/// file rolls by size at the same row whoever encoded it (two hours of out-of-order, late
/// and malformed records; files of at most 200 kB, so raw files roll by size).
#[test]
fn the_same_input_gives_the_same_files_byte_for_byte_with_any_threads() {
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("events.jsonl");
    write_input(&input_path, &input());
    let outputs: Vec<Vec<(std::path::PathBuf, Vec<u8>)>> = ["1", "1", "2", "3"]
        .iter()
        .enumerate()
        .map(|(run, threads)| {
            let out = dir.path().join(run.to_string());
            // Pinned, so that the future event's dead letter names the same reference time.
            let output = process(
                &input_path,
                &out,
                &[
                    "--file-max-age-ms",
                    "3600000",
                    "--file-max-bytes",
                    "200000",
                    "--reference-time-ms",
                    "2026-01-01T00:00:00Z",
                    "--threads",
                    threads,
                ],
            );
            assert!(output.status.success(), "{}", stderr(&output));
            parquet_files(&out)
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::read(out.join(&f)).unwrap();
                    (f, bytes)
                })
                .collect()
        })
        .collect();
    let raw = outputs[0]
        .iter()
        .filter(|(f, _)| f.starts_with("pageview-pipeline-local-raw-events"))
        .count();
    assert!(
        raw >= 4,
        "raw files roll by size: {:?}",
        outputs[0].iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    for (run, output) in outputs.iter().enumerate().skip(1) {
        let names = |o: &[(std::path::PathBuf, Vec<u8>)]| {
            o.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(output), names(&outputs[0]), "run {run}'s file names");
        assert!(output == &outputs[0], "run {run}'s file contents differ");
    }
}

/// Last year's traffic as a backfill file (10 events/s for 100 minutes, up to 1.5 s out of
/// order), with one event from a clock a day fast at the 10% mark and one from a clock set to
/// 2099. Before the partition's clock needed three events to move, the day-ahead event made
/// 53,999 of these 60,002 lines late (docs/PERFORMANCE.md, issue 24).
#[test]
fn a_backfill_with_a_clock_a_day_fast_and_one_in_2099_keeps_every_honest_event() {
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("backfill.jsonl");
    let out = dir.path().join("out");
    let base = 1_765_065_600_000; // 2025-12-07T00:00:00Z
    let mut rng = Lcg(24);
    let mut lines = Vec::new();
    let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let postcodes = ["SW19", "E1", "W1"];
    for i in 0..60_000i64 {
        let ts = base + 1_500 + i * 100 + rng.below(3_001) as i64 - 1_500;
        let postcode = postcodes[(i % 3) as usize];
        lines.push(valid_line(i + 1, postcode, "https://x", ts));
        *want
            .entry((ts.div_euclid(MINUTE) * MINUTE, postcode.into()))
            .or_default() += 1;
        if i == 6_000 {
            let ahead = ts + 24 * 60 * MINUTE;
            lines.push(valid_line(900_001, "E1", "https://x", ahead));
            *want
                .entry((ahead.div_euclid(MINUTE) * MINUTE, "E1".into()))
                .or_default() += 1;
            lines.push(valid_line(900_002, "E1", "https://x", 4_070_908_800_000));
        }
    }
    std::fs::write(&input_path, lines.join(&b'\n')).unwrap();
    let output = process(&input_path, &out, &[]);
    assert!(output.status.success(), "{}", stderr(&output));

    assert_eq!(
        dead_letters_of(&out, "late_event"),
        0,
        "no honest event late"
    );
    assert_eq!(dead_letters_of(&out, "future_timestamp"), 1, "2099");
    assert_eq!(
        rows(&out, RAW) + rows(&out, DLQ),
        lines.len(),
        "every line once"
    );
    let got: BTreeMap<(i64, String), i64> = window_counts(&out)
        .into_iter()
        .flat_map(|(start, rows)| rows.into_iter().map(move |(p, n)| ((start, p), n)))
        .collect();
    assert!(
        got.len() >= 300,
        "100 minutes of 3 postcodes, and the outlier's own window"
    );
    assert_eq!(
        got, want,
        "every window's honest count; the day-ahead event in its own"
    );
}
