//! One conformance suite for the storage seam, run against local disk and against S3 on a
//! real LocalStack: what the pipeline relies on (atomic publishing, idempotent re-publishing,
//! listings, ranged reads, small objects) behaves the same on both, and a request S3 refuses
//! for good (a range past the end of an object) is an error at once, not an endless wait.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::s3::LocalStack;
use crate::common::*;
use pageview::storage::{LocalStorage, S3Settings, S3Storage, Storage, StorageError};

/// Every bucket the suite uses exists on both backends (LocalStack's are made by
/// `pageview buckets create`).
const BUCKET: &str = RAW;

fn conformance(storage: &dyn Storage) {
    // Small objects: put, get, list, delete.
    storage.put(&format!("{BUCKET}/c/1.json"), b"one").unwrap();
    storage.put(&format!("{BUCKET}/c/1.json"), b"uno").unwrap();
    storage.put(&format!("{BUCKET}/c/2.json"), b"two").unwrap();
    assert_eq!(
        storage
            .get(&format!("{BUCKET}/c/1.json"))
            .unwrap()
            .as_deref(),
        Some(&b"uno"[..]),
        "a put replaces what was there"
    );
    assert_eq!(storage.get(&format!("{BUCKET}/c/none.json")).unwrap(), None);
    let mut names = storage.list(&format!("{BUCKET}/c")).unwrap();
    names.sort();
    assert_eq!(names, ["1.json", "2.json"]);
    assert!(
        storage
            .list(&format!("{BUCKET}/nothing-here"))
            .unwrap()
            .is_empty()
    );
    storage.delete(&format!("{BUCKET}/c/2.json")).unwrap();
    storage.delete(&format!("{BUCKET}/c/2.json")).unwrap();
    assert_eq!(storage.get(&format!("{BUCKET}/c/2.json")).unwrap(), None);

    // Conditional writes: put only where absent, replace only the version read.
    let marker = format!("{BUCKET}/r/marker.json");
    assert!(storage.put_new(&marker, b"first").unwrap());
    assert!(!storage.put_new(&marker, b"second").unwrap());
    assert_eq!(
        storage.get(&marker).unwrap().as_deref(),
        Some(&b"first"[..])
    );
    let register = format!("{BUCKET}/r/claims.json");
    assert_eq!(storage.get_versioned(&register).unwrap(), None);
    let created = storage.swap(&register, b"{1}", None).unwrap().unwrap();
    assert_eq!(
        storage.swap(&register, b"{2}", None).unwrap(),
        None,
        "it exists"
    );
    let (bytes, read) = storage.get_versioned(&register).unwrap().unwrap();
    assert_eq!((bytes.as_slice(), &read), (&b"{1}"[..], &created));
    let swapped = storage.swap(&register, b"{1, 2}", Some(&read)).unwrap();
    assert_eq!(
        storage.swap(&register, b"{1, 3}", Some(&read)).unwrap(),
        None,
        "a writer that read the version before is refused"
    );
    let (bytes, now) = storage.get_versioned(&register).unwrap().unwrap();
    assert_eq!(bytes, b"{1, 2}");
    assert_ne!(now, read);
    assert_eq!(Some(now), swapped, "a swap says the version it made");
    for key in [&marker, &register] {
        storage.delete(key).unwrap();
    }

    // A file is invisible until published, then whole at its key.
    let mut file = storage.create(BUCKET).unwrap();
    file.write_all(b"0123456789").unwrap();
    let key = format!("{BUCKET}/dt=2026-12-03/part-a.parquet");
    assert!(storage.get(&key).unwrap().is_none());
    assert!(
        !storage
            .list_files(BUCKET)
            .unwrap()
            .iter()
            .any(|f| f.path.starts_with("dt=")),
        "nothing listed before it is published"
    );
    assert_eq!(file.publish(&key).unwrap(), 10);
    assert_eq!(
        storage.get(&key).unwrap().as_deref(),
        Some(&b"0123456789"[..])
    );
    let listed = storage.list_files(BUCKET).unwrap();
    let paths: Vec<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["c/1.json", "dt=2026-12-03/part-a.parquet"],
        "sorted, no staging"
    );
    assert_eq!(listed[1].bytes, 10);

    // Ranged reads; a range past the end is refused, at once.
    assert_eq!(&storage.get_range(&key, 2..5).unwrap()[..], b"234");
    assert_eq!(&storage.get_range(&key, 0..10).unwrap()[..], b"0123456789");
    let past_end = storage.get_range(&key, 20..30).unwrap_err();
    let said = past_end.to_string();
    assert!(
        said.contains("part-a.parquet") && !said.contains('\n'),
        "one line naming the object: {said}"
    );

    // Staged, then published by id as a checkpoint does; publishing again changes nothing.
    let mut file = storage.create(BUCKET).unwrap();
    file.write_all(b"staged").unwrap();
    let staged = file.stage().unwrap();
    assert_eq!(staged.bytes, 6);
    let key = format!("{BUCKET}/dt=2026-12-03/part-b.parquet");
    assert!(
        storage.get(&key).unwrap().is_none(),
        "staged is not visible"
    );
    storage.publish_staged(&staged.id, &key).unwrap();
    storage.publish_staged(&staged.id, &key).unwrap();
    assert_eq!(storage.get(&key).unwrap().as_deref(), Some(&b"staged"[..]));
    let missing = storage.publish_staged("no-such-staged-file", &format!("{BUCKET}/x.parquet"));
    assert!(
        matches!(missing, Err(StorageError::StagedMissing { .. })),
        "{missing:?}"
    );
    // A file dropped before it is published leaves nothing a reader sees.
    let mut dropped = storage.create(BUCKET).unwrap();
    dropped.write_all(b"abandoned").unwrap();
    drop(dropped);
    storage.remove_staged_orphans().unwrap();
    assert_eq!(storage.list_files(BUCKET).unwrap().len(), 3);
}

#[test]
fn local_disk_and_s3_behave_alike() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&LocalStorage::open(dir.path()).unwrap());

    // object_store reads its credentials from the environment, which no test may change
    // while others run: the S3 half runs in a process of its own, this binary again with
    // LocalStack's variables set.
    let localstack = LocalStack::with_buckets();
    let mut child = Command::new(std::env::current_exe().unwrap());
    localstack
        .env(&mut child)
        .args([S3_HALF, "--exact", "--ignored", "--nocapture"]);
    let out = child.output().unwrap();
    assert!(
        out.status.success() && stdout(&out).contains("1 passed"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The test `local_disk_and_s3_behave_alike` runs in a child process.
const S3_HALF: &str = "storage::s3_behaves_as_local_disk";

#[test]
#[ignore = "run by local_disk_and_s3_behave_alike, with a LocalStack's variables set"]
fn s3_behaves_as_local_disk() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("run by local_disk_and_s3_behave_alike, which sets AWS_ENDPOINT_URL");
    let settings = S3Settings {
        region: "us-east-1".into(),
        endpoint: Some(endpoint),
        part_size: 5 << 20,
        concurrency: 2,
        timeout: Duration::from_secs(10),
    };
    let s3: Arc<dyn Storage> = Arc::new(S3Storage::open(&settings, &[BUCKET], None).unwrap());
    conformance(s3.as_ref());
    // S3's own words, from its error code: the range cannot be satisfied, waiting or not.
    let refused = s3
        .get_range(&format!("{BUCKET}/c/1.json"), 50..60)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("InvalidRange"), "{refused}");

    // A bucket that does not exist is recognised by S3's error code.
    let missing = S3Storage::open(&settings, &["no-such-bucket-here"], None);
    assert!(
        matches!(missing, Err(StorageError::NoBucket { .. })),
        "{:?}",
        missing.err()
    );
}
