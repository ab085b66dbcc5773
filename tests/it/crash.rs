//! Crashes at every step of the commit protocol, driven through the real driver loop, router,
//! commit component and manifests on local disk: a storage that stops working after a
//! chosen number of writes is a process killed right there (each write either happened
//! whole or not at all, as the real ones are atomic), and the next life resumes from what
//! storage holds. Whatever the crashes, rebalances and file rolls, at the end every valid
//! record has one raw row, every malformed and late record one dead letter, every window
//! its exact count, published or open in the last checkpoint, and no staged file is left.

use std::collections::BTreeMap;
use std::io::Write;
use std::num::NonZero;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use bytes::Bytes;
use parquet::basic::Compression;
use proptest::prelude::*;

use pageview::commit::{Checkpointed, Commit, CommitPoint, Manifests, Merger};
use pageview::config::{PipelineSettings, TableFormat};
use pageview::pipeline::{drive, resumed_router};
use pageview::record::Origin;
use pageview::sink::Tags;
use pageview::source::{Assignment, Decoded, Poll, Record, Source, SourceError};
use pageview::storage::{
    Buckets, Listed, LocalStorage, PendingFile, Staged, Storage, StorageError, Unsynced, Version,
};
use pageview::window::WindowSpec;
use pageview::workers::Workers;

use crate::common::{AGGREGATED, DLQ, RAW};

const TOPIC: &str = "pageview-events";
const PARTITIONS: [i32; 2] = [0, 1];
const T0: i64 = 1_700_000_040_000;
/// How long an idle step waits. Files roll by age at some ticks and not others when their
/// age limit is a little above it, so files of one partition's two hours can be finished at
/// different checkpoints.
const IDLE: Duration = Duration::from_millis(2);

/// Local disk that refuses every write once `left` writes have been made: the process died
/// at that write. Reads always work, as a restarted process can read what is there.
struct Mortal {
    disk: LocalStorage,
    left: AtomicUsize,
}

impl Mortal {
    fn write(&self) -> Result<(), StorageError> {
        let alive = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if alive {
            Ok(())
        } else {
            Err(StorageError::Write {
                path: "crash".into(),
                source: std::io::Error::other("killed"),
            })
        }
    }
}

struct MortalFile {
    file: Box<dyn PendingFile>,
    storage: Arc<Mortal>,
}

impl Write for MortalFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl PendingFile for MortalFile {
    fn publish_unsynced(
        self: Box<Self>,
        key: &str,
    ) -> Result<(u64, Option<Unsynced>), StorageError> {
        self.storage.write()?;
        self.file.publish_unsynced(key)
    }
    fn write_behind(&mut self) -> Result<(), StorageError> {
        self.file.write_behind()
    }
    fn stage(self: Box<Self>) -> Result<Staged, StorageError> {
        self.storage.write()?;
        self.file.stage()
    }
}

/// A handle on a [`Mortal`], so its files can reach it too.
struct Life(Arc<Mortal>);

impl Storage for Life {
    fn create(&self, bucket: &str) -> Result<Box<dyn PendingFile>, StorageError> {
        Ok(Box::new(MortalFile {
            file: self.0.disk.create(bucket)?,
            storage: self.0.clone(),
        }))
    }
    fn publish_staged(&self, staged: &str, key: &str) -> Result<(), StorageError> {
        self.0.write()?;
        self.0.disk.publish_staged(staged, key)
    }
    fn remove_staged_orphans(&self) -> Result<(), StorageError> {
        self.0.write()?;
        self.0.disk.remove_staged_orphans()
    }
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.0.write()?;
        self.0.disk.put(key, bytes)
    }
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        self.0.write()?;
        self.0.disk.put_new(key, bytes)
    }
    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StorageError> {
        self.0.disk.get_versioned(key)
    }
    fn swap(
        &self,
        key: &str,
        bytes: &[u8],
        read: Option<&Version>,
    ) -> Result<Option<Version>, StorageError> {
        self.0.write()?;
        self.0.disk.swap(key, bytes, read)
    }
    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        self.0.disk.exists(key)
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.disk.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.0.disk.list(prefix)
    }
    fn list_files(&self, bucket: &str) -> Result<Vec<Listed>, StorageError> {
        self.0.disk.list_files(bucket)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.0.disk.get_range(key, range)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.0.write()?;
        self.0.disk.delete(key)
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The next record of a partition.
    Record(usize),
    /// Nothing came for [`IDLE`]: a tick runs, files roll by age and a checkpoint is due.
    Idle,
    /// The group takes every partition away and gives them back.
    Rebalance,
}

/// The partitions of a topic as a consumer group member given `owned` sees them: assigned
/// where the commit point says, then records in the order `steps` gives, then the rest of
/// them, then the end.
struct Partitions<'a> {
    records: &'a [Vec<Vec<u8>>],
    origins: Vec<Origin>,
    next: Vec<i64>,
    steps: std::vec::IntoIter<Step>,
    point: Arc<dyn CommitPoint>,
    owned: Vec<i32>,
    assigned: bool,
}

impl Source for Partitions<'_> {
    fn poll(&mut self, _: Duration) -> Result<Poll<'_>, SourceError> {
        if !self.assigned {
            self.assigned = true;
            let mut recovery = self.point.recover(&self.owned)?;
            recovery.topic_partitions = Some(PARTITIONS.len() as i32);
            for &p in &self.owned {
                self.next[p as usize] = recovery.start(p).unwrap_or(0);
            }
            return Ok(Poll::Assigned(Box::new(Assignment {
                partitions: self.owned.clone(),
                recovery,
            })));
        }
        let partition = loop {
            match self.steps.next() {
                Some(Step::Record(p))
                    if self.owned.contains(&(p as i32))
                        && self.next[p] < self.records[p].len() as i64 =>
                {
                    break p;
                }
                Some(Step::Record(_)) => {}
                Some(Step::Idle) => {
                    std::thread::sleep(IDLE);
                    return Ok(Poll::Idle);
                }
                Some(Step::Rebalance) => {
                    self.assigned = false;
                    return Ok(Poll::Revoked);
                }
                None => match self
                    .owned
                    .iter()
                    .map(|&p| p as usize)
                    .find(|&p| self.next[p] < self.records[p].len() as i64)
                {
                    Some(p) => break p,
                    None => return Ok(Poll::End),
                },
            }
        };
        let offset = self.next[partition];
        self.next[partition] += 1;
        Ok(Poll::Record(Decoded::new(Record {
            bytes: &self.records[partition][offset as usize],
            offset,
            origin: &self.origins[partition],
            time: None,
        })))
    }

    fn bytes_read(&self) -> u64 {
        0
    }
}

fn settings(roll_every: Duration, threads: usize) -> PipelineSettings {
    PipelineSettings {
        window: WindowSpec::new(60_000),
        watermark_delay_ms: 5_000,
        idle_timeout: Duration::from_secs(3600),
        max_future_skew: Some(Duration::from_secs(3600)),
        reference_time_ms: None,
        buckets: Buckets::new(
            [RAW, AGGREGATED, DLQ].map(String::from),
            "pageview-pipeline-local-checkpoints".into(),
        ),
        file_max_bytes: 128 << 20,
        file_max_age: roll_every,
        compression: Compression::SNAPPY,
        table_format: TableFormat::Parquet,
        workers: Workers::new(NonZero::new(threads).unwrap()),
        compaction: None,
    }
}

/// One life of a processor, group member `member` given the partitions `owned`: until the
/// input ends, or until its storage has taken `writes` writes (then it dies).
fn live(
    root: &Path,
    pipeline: &PipelineSettings,
    records: &[Vec<Vec<u8>>],
    (member, owned): (&str, &[i32]),
    steps: Vec<Step>,
    writes: usize,
) -> bool {
    let mortal = Arc::new(Mortal {
        disk: LocalStorage::open(root).unwrap(),
        left: AtomicUsize::new(writes),
    });
    let storage: Arc<dyn Storage> = Arc::new(Life(mortal));
    let checkpoints = &pipeline.buckets.checkpoints;
    let merger = Merger::new(
        storage.clone(),
        checkpoints,
        "group",
        TOPIC,
        pipeline.window,
        pipeline.sink_config(Tags::Fixed(String::new())),
    );
    let manifests = Manifests::new(storage.clone(), checkpoints, "group", TOPIC).merged_by(merger);
    let point: Arc<dyn CommitPoint> = Arc::new(manifests);
    let mut source = Partitions {
        records,
        origins: PARTITIONS
            .iter()
            .map(|&partition| Origin::Topic {
                topic: TOPIC.into(),
                partition,
            })
            .collect(),
        next: vec![0; PARTITIONS.len()],
        steps: steps.into_iter(),
        point: point.clone(),
        owned: owned.to_vec(),
        assigned: false,
    };
    let checkpointed = Checkpointed::new(point.clone(), member, TOPIC, Duration::ZERO);
    let driven = drive(
        &mut source,
        &mut |assignment, _| {
            resumed_router(
                pipeline,
                storage.clone(),
                TOPIC,
                point.partials(),
                assignment,
            )
        },
        &mut Commit::checkpointed(checkpointed),
        &AtomicBool::new(false),
        Duration::from_secs(3600),
        &mut |_, _| {},
    );
    match driven {
        Ok(_) => true,
        Err(e) => {
            assert!(e.to_string().contains("killed"), "{e}");
            false
        }
    }
}

/// An event of user `user` at `timestamp`; one in seven is malformed.
fn record(user: i64, timestamp: i64) -> Vec<u8> {
    if user % 7 == 3 {
        return format!("{{\"user_id\": {user}, \"postcode\": ").into_bytes();
    }
    let postcode = ["SW19", "E1", "N1"][(user % 3) as usize];
    format!(
        r#"{{"user_id": {user}, "postcode": "{postcode}", "webpage": "https://w.example/", "timestamp": {timestamp}}}"#
    )
    .into_bytes()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..PARTITIONS.len()).prop_map(Step::Record),
        2 => Just(Step::Idle),
        1 => Just(Step::Rebalance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn crashes_at_any_write_lose_nothing_and_repeat_nothing(
        // Per partition, each record's step in event time (ms), mostly forward within a
        // window (a step back may be late), and whether it belongs to the next hour
        // instead: raw files are per hour, so a partition keeps files of two hours open,
        // finished at different moments.
        moves in proptest::collection::vec(
            proptest::collection::vec(
                (prop_oneof![4 => 0i64..20_000, 1 => -150_000i64..0], prop::bool::weighted(0.3)),
                1..40,
            ),
            PARTITIONS.len(),
        ),
        // Each life is one of two group members, given both partitions or one: the
        // group's windows are merged only once each partition is final past them in the
        // newest checkpoint that has it, whichever member wrote it.
        lives in proptest::collection::vec(
            (
                proptest::collection::vec(step(), 0..60),
                0usize..40,
                prop::sample::select(vec!["a", "b"]),
                prop::sample::select(vec![vec![0, 1], vec![0], vec![1]]),
            ),
            0..6,
        ),
        roll_ms in prop_oneof![Just(0u64), Just(3), Just(3_600_000)],
        // Files encoded on the processing thread, or on workers.
        threads in 1usize..=3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = settings(Duration::from_millis(roll_ms), threads);
        let mut user = 0;
        let records: Vec<Vec<Vec<u8>>> = moves
            .iter()
            .map(|moves| {
                let mut at = T0;
                moves
                    .iter()
                    .map(|&(step, next_hour)| {
                        at += step;
                        user += 1;
                        record(user, at + i64::from(next_hour) * 3_600_000)
                    })
                    .collect()
            })
            .collect();
        for (steps, writes, member, owned) in lives {
            live(dir.path(), &pipeline, &records, (member, &owned), steps, writes);
        }
        let last = ("a", &PARTITIONS[..]);
        prop_assert!(live(dir.path(), &pipeline, &records, last, Vec::new(), usize::MAX));
        check(dir.path(), &pipeline, &records)?;
        crate::common::assert_no_staging_leftovers(dir.path());
    }
}

/// Every valid record once in raw, every malformed and late one once in the DLQ, every
/// window's count exact: merged, in partial counts not yet final for the group, or open.
fn check(
    root: &Path,
    pipeline: &PipelineSettings,
    records: &[Vec<Vec<u8>>],
) -> Result<(), TestCaseError> {
    let mut raw: Vec<i64> = crate::common::read_dataset(root, RAW)
        .iter()
        .flat_map(|(_, b)| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    raw.sort();
    let mut dead: Vec<(Vec<u8>, String)> = crate::common::dead_letter_rows(root)
        .into_iter()
        .map(|row| (row.payload, row.kind))
        .collect();
    dead.sort();
    let late: Vec<&[u8]> = dead
        .iter()
        .filter(|(_, kind)| kind == "late_event")
        .map(|(payload, _)| payload.as_slice())
        .collect();

    let mut valid = Vec::new();
    let mut malformed = Vec::new();
    let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for bytes in records.iter().flatten() {
        let Ok(event) = pageview::validate::validate(bytes) else {
            malformed.push(bytes.clone());
            continue;
        };
        valid.push(event.user_id);
        if !late.contains(&bytes.as_slice()) {
            let start = pipeline.window.start_of(event.timestamp);
            *want.entry((start, event.postcode.to_string())).or_default() += 1;
        }
    }
    valid.sort();
    prop_assert_eq!(raw, valid, "raw rows");
    let mut not_late: Vec<Vec<u8>> = dead
        .iter()
        .filter(|(_, kind)| kind != "late_event")
        .map(|(payload, _)| payload.clone())
        .collect();
    not_late.sort();
    malformed.sort();
    prop_assert_eq!(not_late, malformed, "malformed dead letters");
    let mut unique_late = late.clone();
    unique_late.dedup();
    prop_assert_eq!(unique_late.len(), late.len(), "each late record once");

    let mut got: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for (start, rows) in crate::common::window_counts(root) {
        for (postcode, count) in rows {
            let before = got.insert((start, postcode), count);
            prop_assert!(before.is_none(), "a window row published twice");
        }
    }
    // The group's rows are merged up to the end of the newest merge: later windows are not
    // final in every partition yet, and their counts are each member's partial counts.
    let folder = root.join(&pipeline.buckets.checkpoints).join("group");
    let merged_to = std::fs::read_dir(folder.join("merged"))
        .map(|markers| {
            markers
                .flatten()
                .filter(|m| m.file_name() != "known.json")
                .map(|m| {
                    let marker: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(m.path()).unwrap()).unwrap();
                    marker["to"].as_i64().unwrap()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    prop_assert!(
        got.keys().all(|(start, _)| *start < merged_to),
        "rows only of merged windows"
    );
    let partials = format!("{}/group/partials", pipeline.buckets.checkpoints);
    for (_, batch) in crate::common::read_dataset(root, &partials) {
        let starts = batch.column(0).as_primitive::<TimestampMillisecondType>();
        let postcodes = batch.column(2).as_string::<i32>();
        let counts = batch.column(3).as_primitive::<Int64Type>();
        for i in (0..batch.num_rows()).filter(|&i| starts.value(i) >= merged_to) {
            *got.entry((starts.value(i), postcodes.value(i).into()))
                .or_default() += counts.value(i);
        }
    }
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(root).unwrap());
    let open = Manifests::new(storage, &pipeline.buckets.checkpoints, "group", TOPIC)
        .recover(&PARTITIONS)
        .unwrap()
        .windows;
    for count in open {
        *got.entry((count.window_start, count.postcode.into()))
            .or_default() += count.count;
    }
    prop_assert_eq!(got, want, "window counts, published and open");
    Ok(())
}
