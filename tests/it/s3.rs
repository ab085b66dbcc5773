//! `--storage s3` and `buckets create` against LocalStack: the same bytes as on local disk
//! (and the same `inspect` report), multipart uploads that leave nothing behind, rules read
//! back, and clear start-up errors.
//! Kafka → S3 (kill -9, an S3 stall) is in kafka_process.rs, with the Kafka machinery.

use std::path::Path;

use crate::common::s3::{CHECKPOINTS, LocalStack};
use crate::common::*;

const DATASETS: [&str; 3] = [RAW, AGGREGATED, DLQ];

/// (relative path, bytes) of every file under `root`, sorted.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = DATASETS
        .iter()
        .flat_map(|bucket| {
            parquet_files(&root.join(bucket))
                .into_iter()
                .map(move |rel| {
                    let bytes = std::fs::read(root.join(bucket).join(&rel)).unwrap();
                    (format!("{bucket}/{}", rel.display()), bytes)
                })
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_file_processed_to_s3_is_byte_for_byte_what_local_storage_gets() {
    let s3 = LocalStack::with_buckets();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    // Enough rows that the raw file outgrows one 5 MiB part and goes up in parts.
    generate_file(
        &input,
        &[
            "--events",
            "1100k",
            "--rate",
            "100000",
            "--start-time-ms",
            "1700000000000",
            "--seed",
            "5",
            "--malformed-share",
            "0.01",
            "--late-share",
            "0.01",
        ],
    );
    // Files roll by size and at the end only: age is wall-clock time, which differs per run.
    let once = ["--file-max-age-ms", "3600000"];
    let to_s3 = |extra: &[&str]| {
        let mut args = vec![
            "process",
            "--input",
            input.to_str().unwrap(),
            "--storage",
            "s3",
        ];
        args.extend_from_slice(&once);
        args.extend_from_slice(extra);
        let out = s3.pageview(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let out = to_s3(&["--s3-part-size-mib", "5"]);
    assert!(
        stdout(&out).contains("output: s3://pageview-pipeline-local-raw-events"),
        "{}",
        stdout(&out)
    );
    let local = dir.path().join("local");
    let out = process(&input, &local, &once);
    assert!(out.status.success(), "{}", stderr(&out));

    let mirrored = dir.path().join("mirror");
    s3.mirror(&[RAW, AGGREGATED, DLQ, CHECKPOINTS], &mirrored);
    let (on_s3, on_disk) = (files(&mirrored), files(&local));
    let names = |f: &[(String, Vec<u8>)]| {
        f.iter()
            .map(|(n, b)| (n.clone(), b.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&on_s3), names(&on_disk));
    assert!(on_s3 == on_disk, "the same bytes");
    let raw_bytes = on_s3
        .iter()
        .filter(|(n, _)| n.starts_with(RAW))
        .map(|(_, b)| b.len())
        .max();
    assert!(
        raw_bytes > Some(5 << 20),
        "the raw file took several parts: {raw_bytes:?}"
    );
    assert_no_staging_leftovers(&mirrored);
    for bucket in DATASETS {
        assert_eq!(
            s3.open_uploads(bucket),
            0,
            "open multipart uploads in {bucket}"
        );
    }

    // Again: every key is replaced whole by the same bytes, nothing is added.
    to_s3(&[]);
    s3.mirror(&[RAW, AGGREGATED, DLQ, CHECKPOINTS], &mirrored);
    assert!(
        files(&mirrored) == on_disk,
        "a re-run leaves the same objects"
    );

    // `inspect` reads S3 as it reads the folder: the same report under a different heading.
    let report = |out: std::process::Output| {
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let (heading, body) = text.split_once('\n').unwrap();
        (heading.to_string(), body.to_string())
    };
    let (heading, on_s3) = report(s3.pageview(&["inspect", "--storage", "s3"]));
    assert_eq!(heading, "S3");
    let (_, on_disk) = report(run(&["inspect", "--storage", local.to_str().unwrap()]));
    assert_eq!(on_s3, on_disk);
    assert!(on_s3.contains("latest windows (1)"), "{on_s3}");
}

/// Delta tables on S3: `compact`, `inspect` and `vacuum` work on them as on a folder's, and
/// inspect reads a table through its log (the compacted files, not every file the bucket
/// still holds).
#[test]
fn delta_tables_on_s3_are_compacted_inspected_and_vacuumed_through_their_logs() {
    let s3 = LocalStack::with_buckets();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    generate_file(
        &input,
        &[
            "--events",
            "30000",
            "--rate",
            "0.5",
            "--start-time-ms",
            "1700000000000",
            "--seed",
            "3",
            "--malformed-share",
            "0.02",
        ],
    );
    // Three runs of a third each (17 hours in all): the hours where one run ends and the next
    // begins get a file from each.
    let bytes = std::fs::read(&input).unwrap();
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    for (i, part) in lines.chunks(10_000).enumerate() {
        let path = dir.path().join(format!("part{i}.jsonl"));
        std::fs::write(&path, part.concat()).unwrap();
        let out = s3.pageview(&[
            "process",
            "--input",
            path.to_str().unwrap(),
            "--storage",
            "s3",
            "--table-format",
            "delta",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let inspect = || {
        let out = s3.pageview(&["inspect", "--storage", "s3"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let raw_line = |report: &str| {
        report
            .lines()
            .find(|l| l.starts_with("raw "))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = inspect();
    // dataset, bucket, files, rows, …
    let count = |report: &str, column: usize| -> usize {
        raw_line(report)[column].replace(',', "").parse().unwrap()
    };
    let (files, rows) = (count(&before, 2), count(&before, 3));

    let compacted = s3.pageview(&["compact", "--storage", "s3"]);
    assert!(compacted.status.success(), "{}", stderr(&compacted));
    let said = stdout(&compacted);
    let raw_said = said.lines().find(|l| l.starts_with(RAW)).unwrap();
    let numbers: Vec<usize> = raw_said
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (removed, added) = (numbers[0], numbers[1]);
    assert!(removed > added && added > 0, "{said}");
    let after = inspect();
    assert_eq!(count(&after, 2), files - removed + added, "{after}");
    assert_eq!(count(&after, 3), rows, "the same rows");
    let mirrored = dir.path().join("mirror");
    s3.mirror(&[RAW], &mirrored);
    assert_eq!(
        parquet_files(&mirrored.join(RAW)).len(),
        files + added,
        "the files a reader of the older version needs stay"
    );

    // Nothing is past the retention yet: vacuum deletes nothing, and the table reads the same.
    let vacuumed = s3.pageview(&["vacuum", "--storage", "s3"]);
    assert!(vacuumed.status.success(), "{}", stderr(&vacuumed));
    assert!(
        stdout(&vacuumed).contains(&format!("{RAW}: deleted 0 files")),
        "{}",
        stdout(&vacuumed)
    );
    assert_eq!(inspect(), after);
}

#[test]
fn buckets_create_twice_changes_nothing_and_the_rules_read_back() {
    let s3 = LocalStack::start();
    let first = s3.pageview(&["buckets", "create", "--dlq-retention-days", "45"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = s3.pageview(&["buckets", "create", "--dlq-retention-days", "45"]);
    assert!(second.status.success(), "{}", stderr(&second));
    for bucket in [RAW, AGGREGATED, DLQ, CHECKPOINTS] {
        assert!(
            stdout(&first).contains(&format!("{bucket}: created")),
            "{}",
            stdout(&first)
        );
        assert!(
            stdout(&second).contains(&format!("{bucket}: exists")),
            "{}",
            stdout(&second)
        );
    }
    let read = s3.boto3(
        "out = {}\n\
         for b in s3.list_buckets()['Buckets']:\n\
         \x20   n = b['Name']\n\
         \x20   rules = s3.get_bucket_lifecycle_configuration(Bucket=n)['Rules']\n\
         \x20   out[n] = {\n\
         \x20       'rules': {r['ID']: r for r in rules},\n\
         \x20       'versioning': s3.get_bucket_versioning(Bucket=n).get('Status'),\n\
         \x20       'sse': s3.get_bucket_encryption(Bucket=n)['ServerSideEncryptionConfiguration']['Rules'][0]['ApplyServerSideEncryptionByDefault']['SSEAlgorithm'],\n\
         \x20       'private': all(s3.get_public_access_block(Bucket=n)['PublicAccessBlockConfiguration'].values()),\n\
         \x20   }\n\
         print(json.dumps(out))",
    );
    let state: serde_json::Value = serde_json::from_str(&read).unwrap();
    assert_eq!(state.as_object().unwrap().len(), 4, "{state}");
    for bucket in [RAW, AGGREGATED, DLQ, CHECKPOINTS] {
        let b = &state[bucket];
        assert_eq!(b["versioning"], "Enabled", "{bucket}");
        assert_eq!(b["sse"], "AES256", "{bucket}");
        assert_eq!(b["private"], true, "{bucket}");
        let rules = &b["rules"];
        assert_eq!(
            rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
            1
        );
        assert_eq!(
            rules["expire-replaced-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"],
            7
        );
    }
    for bucket in [RAW, AGGREGATED] {
        let glacier = &state[bucket]["rules"]["archive-to-glacier"]["Transitions"][0];
        assert_eq!(glacier["Days"], 30, "{bucket}");
        assert_eq!(glacier["StorageClass"], "GLACIER", "{bucket}");
        let filter = &state[bucket]["rules"]["archive-to-glacier"]["Filter"];
        assert_eq!(
            filter["Prefix"], "dt=",
            "data files only, never a Delta log"
        );
    }
    assert_eq!(
        state[DLQ]["rules"]["expire-dead-letters"]["Expiration"]["Days"],
        45
    );
    assert_eq!(state[CHECKPOINTS]["rules"].as_object().unwrap().len(), 2);

    // For Delta tables no rule deletes dead letters: the table's log names its files.
    let delta = s3.pageview(&["buckets", "create", "--table-format", "delta"]);
    assert!(delta.status.success(), "{}", stderr(&delta));
    assert!(
        stdout(&delta).contains("dead letters are kept"),
        "{}",
        stdout(&delta)
    );
    let rules = s3.boto3(&format!(
        "print(sorted(r['ID'] for r in s3.get_bucket_lifecycle_configuration(Bucket='{DLQ}')['Rules']))"
    ));
    assert_eq!(
        rules.trim(),
        "['abort-incomplete-uploads', 'expire-replaced-versions']"
    );
}

#[test]
fn a_missing_bucket_or_an_unreachable_endpoint_fails_before_anything_is_read() {
    let s3 = LocalStack::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "").unwrap();
    let input = input.to_str().unwrap();
    let out = s3.pageview(&["process", "--input", input, "--storage", "s3"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bucket pageview-pipeline-local-raw-events does not exist")
            && err.contains("pageview buckets create"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = s3
        .env(&mut pageview())
        .args(["process", "--input", input, "--storage", "s3"])
        .env("AWS_ENDPOINT_URL", &nowhere)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot use S3 at {nowhere}")),
        "{err}"
    );

    let out = s3
        .env(&mut pageview())
        .args(["process", "--input", input, "--storage", "s3"])
        .env("AWS_ENDPOINT_URL", "localhost:4566")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("invalid AWS_ENDPOINT_URL"),
        "{}",
        stderr(&out)
    );
}
