//! The datasets open in pyarrow and DuckDB with no custom code, with the expected types and
//! the same numbers as the pipeline reports.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The Python with pyarrow and DuckDB that the README's test command installs.
fn python() -> PathBuf {
    let path = installed("PAGEVIEW_PYTHON", "py/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs pyarrow and duckdb",
        path.display()
    );
    path
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

    let output = Command::new(python())
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
