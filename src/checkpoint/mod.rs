//! What is durable and what may be committed: routed state → checkpoint manifests, and
//! manifests → the state a processor resumes from (docs/EXACTLY_ONCE.md).
//!
//! A manifest is the one truth about a Kafka run: the offsets behind every published file,
//! the open windows and watermarks, and the staged files it makes visible. Files are
//! published only after the manifest naming them is durable, and a restart resumes from
//! manifests, never from Kafka's committed offsets (those are a hint for lag tools).
//! Everything here is pure: `commit` reads and writes manifests and carries the protocol out.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::{EventMs, Offset, Partition};
use crate::sink::Finished;
use crate::storage::StorageError;
use crate::window::{EventClock, OpenCount};

mod claims;
mod recovery;
pub use claims::{Claim, Claims, Taken};
pub use recovery::{Recovery, recover, replaced, sort_out, superseded};

/// Bumped when the manifest format changes, so an old processor refuses a newer manifest.
/// Version 2 saves each partition's recent event times and record timestamps with its clock;
/// a version 1 manifest is still read (its clock resumes, its recent times start empty).
/// Version 3 publishes closed windows as the group's partial counts, merged into one row
/// per (window, postcode), where earlier versions wrote each processor's own rows: a
/// version 2 processor must not join a group that merges.
/// Version 4 commits a checkpoint into Parquet folders by naming it in the group's claims,
/// which fence processors: a version 3 processor, which would write unfenced, must not join.
pub const VERSION: u32 = 4;

/// The first version whose checkpoints the group's claims name once committed.
pub const CLAIMED: u32 = 4;

/// What a checkpoint saves and publishes, taken from the router in one step.
pub struct Sealed {
    pub finished: Vec<Finished>,
    /// Every partition the router knows something of, in partition order.
    pub partitions: Vec<Progress>,
    pub watermark: Option<EventMs>,
    pub windows: Vec<OpenCount>,
}

/// Where one partition stood when the router sealed a checkpoint; `None` where the part of
/// the router that knows it has nothing of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub partition: Partition,
    /// The offset after its last routed record.
    pub next: Option<Offset>,
    /// The offset after its last record read, replayed ones included: where reading would
    /// resume.
    pub read: Option<Offset>,
    /// The first offset of its oldest raw file still open.
    pub raw_open_from: Option<Offset>,
    /// Its event-time clock.
    pub clock: Option<EventClock>,
    /// The watermark its windows are final up to, where that is above the processor's.
    pub floor: Option<EventMs>,
}

impl Progress {
    fn of(partition: Partition) -> Self {
        Progress {
            partition,
            next: None,
            read: None,
            raw_open_from: None,
            clock: None,
            floor: None,
        }
    }

    /// One record per partition from what each part of the router knows: the cursors of
    /// the partitions it routes (partition, next, read), the first offset of each open raw
    /// file, the partitions' clocks and their floors.
    pub fn join(
        cursors: impl IntoIterator<Item = (Partition, Offset, Offset)>,
        raw_open: impl IntoIterator<Item = (Partition, Offset)>,
        clocks: impl IntoIterator<Item = (Partition, EventClock)>,
        floors: impl IntoIterator<Item = (Partition, EventMs)>,
    ) -> Vec<Progress> {
        fn at(all: &mut BTreeMap<Partition, Progress>, partition: Partition) -> &mut Progress {
            all.entry(partition)
                .or_insert_with(|| Progress::of(partition))
        }
        let mut all = BTreeMap::new();
        for (partition, next, read) in cursors {
            let progress = at(&mut all, partition);
            progress.next = Some(next);
            progress.read = Some(read);
        }
        for (partition, first) in raw_open {
            let progress = at(&mut all, partition);
            progress.raw_open_from = Some(progress.raw_open_from.map_or(first, |f| f.min(first)));
        }
        for (partition, clock) in clocks {
            at(&mut all, partition).clock = Some(clock);
        }
        for (partition, floor) in floors {
            at(&mut all, partition).floor = Some(floor);
        }
        all.into_values().collect()
    }
}

/// One checkpoint of one processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Orders checkpoints across processors of a group: a processor starts above every epoch
    /// it found, so the newest state of a partition is in its highest-epoch manifest.
    pub epoch: u64,
    pub member: String,
    pub topic: String,
    /// How many partitions the topic had when the processor was given its partitions: a
    /// window is final for the group once every one of them is final past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_partitions: Option<i32>,
    /// The processor's watermark, which never moves back.
    pub watermark: Option<EventMs>,
    pub partitions: BTreeMap<Partition, PartitionState>,
    /// Open window counts of these partitions.
    pub windows: Vec<OpenCount>,
    /// Staged files this checkpoint publishes.
    pub files: Vec<StagedFile>,
}

impl Manifest {
    /// How far `partition`'s windows are final in this checkpoint: the watermark, or the
    /// floor the partition came with when that is higher; `None` for a partition it does not
    /// hold, or one never final.
    pub fn final_to(&self, partition: Partition) -> Option<EventMs> {
        self.partitions
            .get(&partition)?
            .final_to
            .max(self.watermark)
    }

    /// A manifest read from `key`, wherever it was kept (a file of its own, a raw table
    /// commit's info): one that does not parse, or is of another format version, stops the
    /// processor rather than have it guess where to resume.
    pub fn checked(
        parsed: serde_json::Result<Manifest>,
        key: impl Into<String>,
    ) -> Result<Manifest, CheckpointError> {
        let problem = match parsed {
            Ok(manifest) if (1..=VERSION).contains(&manifest.version) => return Ok(manifest),
            Ok(manifest) => format!(
                "format version {} (this build reads 1 to {VERSION})",
                manifest.version
            ),
            Err(e) => e.to_string(),
        };
        Err(CheckpointError::Corrupt {
            key: key.into(),
            problem,
        })
    }
}

#[cfg(test)]
impl Manifest {
    /// A checkpoint of `member` at `epoch` holding `partitions` (partition, next), each with
    /// one open count of `next` and one staged file.
    pub fn sample(epoch: u64, member: &str, partitions: &[(i32, i64)]) -> Self {
        Manifest {
            version: VERSION,
            epoch,
            member: member.into(),
            topic: "t".into(),
            topic_partitions: None,
            watermark: Some(epoch as i64 * 1000),
            partitions: partitions
                .iter()
                .map(|&(p, next)| {
                    let state = PartitionState {
                        next,
                        raw_from: next,
                        ..PartitionState::default()
                    };
                    (p, state)
                })
                .collect(),
            windows: partitions
                .iter()
                .map(|&(p, next)| OpenCount {
                    window_start: 0,
                    partition: p,
                    postcode: "E1".into(),
                    count: next,
                })
                .collect(),
            files: vec![StagedFile {
                staged: format!("{member}-{epoch}"),
                key: format!("k{epoch}"),
                ..StagedFile::default()
            }],
        }
    }

    /// A checkpoint of `member` holding partition 0 alone, complete up to `next`.
    pub fn of_partition_0(epoch: u64, member: &str, next: i64, files: Vec<StagedFile>) -> Self {
        let state = PartitionState {
            next,
            raw_from: next,
            ..PartitionState::default()
        };
        Manifest {
            version: VERSION,
            epoch,
            member: member.into(),
            topic: "t".into(),
            topic_partitions: None,
            watermark: None,
            partitions: BTreeMap::from([(0, state)]),
            windows: Vec::new(),
            files,
        }
    }
}

/// Where one partition stands. Two cursors, so raw files can stay open (and grow big) across
/// checkpoints while windows and dead letters move on every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Every record below this offset is counted in the windows saved here or in published
    /// aggregated files, and is in a published DLQ file if it went there.
    pub next: Offset,
    /// Every valid record below this offset has its raw row in a published file; replay
    /// starts here.
    pub raw_from: Offset,
    /// Per event hour, the offset after the last raw row of that hour in a published file:
    /// replay below `next` rewrites a raw row only at or after it.
    pub raw_done: BTreeMap<i64, Offset>,
    /// Where the partition's event-time clock stands (`EventClock`; version 1 called it
    /// `max_event_ms`, the largest valid event time).
    #[serde(alias = "max_event_ms")]
    pub clock: Option<EventMs>,
    /// Its latest valid event times, oldest first: what confirms the clock's next move.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<EventMs>,
    /// The highest Kafka record timestamp of its valid events: the clock never passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_max_ms: Option<EventMs>,
    /// The watermark the partition's windows are final up to, when above the manifest's:
    /// it came from a processor whose watermark was ahead (`Watermarks`' floors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_to: Option<EventMs>,
}

impl PartitionState {
    /// The partition's event-time clock as saved.
    pub fn clock(&self) -> EventClock {
        EventClock::restore(self.clock, &self.recent, self.record_max_ms)
    }

    /// Whether a valid record of `hour` at `offset` below [`Self::next`] still lacks a raw row.
    pub fn raw_missing(&self, offset: Offset, hour: i64) -> bool {
        self.raw_done.get(&hour).is_none_or(|&done| offset >= done)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    pub staged: String,
    pub key: String,
    /// What a table's log says of the file once it adds it.
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub bytes: u64,
}

/// `<epoch>-<member>.json`, the epoch zero-padded so names sort by epoch.
pub fn manifest_name(epoch: u64, member: &str) -> String {
    format!("{epoch:020}-{member}.json")
}

/// The partition states of the next manifest, from the previous ones and what happened since.
#[derive(Debug, Default, Clone)]
pub struct Cursors {
    partitions: BTreeMap<Partition, PartitionState>,
}

impl Cursors {
    pub fn restore(partitions: BTreeMap<Partition, PartitionState>) -> Self {
        Cursors { partitions }
    }

    /// Records below `next` of `partition` have been routed.
    fn routed(&mut self, partition: Partition, next: Offset) {
        let state = self.partitions.entry(partition).or_default();
        state.next = state.next.max(next);
    }

    /// A raw file of `partition` and `hour` ending at offset `last` is in this checkpoint.
    pub fn raw_file(&mut self, partition: Partition, hour: i64, last: Offset) {
        let done = self
            .partitions
            .entry(partition)
            .or_default()
            .raw_done
            .entry(hour)
            .or_insert(last + 1);
        *done = (*done).max(last + 1);
    }

    /// The states to save, given where each partition stood (`progress`, in partition
    /// order). A partition's raw cursor is the first offset of its oldest open raw file, or
    /// where its reading stands if that is lower (below `next` during a replay: the rows from
    /// there on are in no file yet), or `next`. Raw progress below the raw cursor is
    /// forgotten: replay never goes there again.
    pub fn seal(&mut self, progress: &[Progress]) -> BTreeMap<Partition, PartitionState> {
        for p in progress {
            if let Some(next) = p.next {
                self.routed(p.partition, next);
            }
            if let Some(clock) = p.clock {
                let state = self.partitions.entry(p.partition).or_default();
                state.clock = clock.time();
                state.recent = clock.recent();
                state.record_max_ms = clock.record_max();
            }
        }
        for (partition, state) in &mut self.partitions {
            let p = progress
                .binary_search_by_key(partition, |p| p.partition)
                .ok()
                .map(|i| progress[i]);
            state.final_to = p.and_then(|p| p.floor);
            let raw_from = p.and_then(|p| p.raw_open_from.into_iter().chain(p.read).min());
            state.raw_from = raw_from.unwrap_or(state.next);
            let from = state.raw_from;
            state.raw_done.retain(|_, done| *done > from);
        }
        self.partitions.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A manifest that cannot be read: stop rather than guess where to resume.
    #[error("checkpoint {key} is unreadable: {problem}")]
    Corrupt { key: String, problem: String },
    #[error("cannot take the assigned partitions at their checkpointed offsets: {0}")]
    Assign(String),
    /// The group's checkpoints are of another topic: a group reads one topic.
    #[error(
        "consumer group {group} has checkpoints of topic {found} ({key}), not {wanted}: a group \
         reads one topic, so give {wanted} a group of its own (--group), or delete the group's \
         checkpoints to start it over"
    )]
    OtherTopic {
        group: String,
        found: String,
        wanted: String,
        key: String,
    },
    /// Another processor committed a partition this one believed it owned: the group gave
    /// it away while this one could not tell (frozen, or cut off longer than its session).
    #[error(
        "partition {partition} of {topic} was committed by another processor of the group \
         since this one took it ({key} names {found} where this one knew {known}): this \
         processor no longer owns it and stops; the other carries on"
    )]
    Fenced {
        topic: String,
        partition: Partition,
        found: String,
        known: String,
        key: String,
    },
    /// The claims name a checkpoint that is not in the group's folder.
    #[error("{key} says partition {partition} was last committed by {manifest}, which is gone")]
    Lost {
        key: String,
        partition: Partition,
        manifest: String,
    },
}

/// The least time between two checkpoints made for closed windows.
const CLOSED_WINDOW_GAP: Duration = Duration::from_millis(500);

/// A checkpoint is due every interval, and soon after a window has closed, so that its row
/// is visible within a tick of the watermark passing it. Soon, not at once: reading a
/// backlog closes windows many times a second, and each checkpoint fsyncs its files.
pub fn due(since_last: Duration, interval: Duration, windows_closed: bool) -> bool {
    (windows_closed && since_last >= CLOSED_WINDOW_GAP) || since_last >= interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn closed_windows_bring_a_checkpoint_forward_but_not_more_than_twice_a_second() {
        let interval = Duration::from_secs(10);
        let ms = Duration::from_millis;
        assert!(!due(ms(100), interval, true));
        assert!(due(ms(500), interval, true));
        assert!(!due(ms(9_999), interval, false));
        assert!(due(ms(10_000), interval, false));
    }

    #[test]
    fn a_manifest_of_another_format_or_none_is_refused_naming_where_it_was_read() {
        let mut newer = Manifest::of_partition_0(3, "a", 10, Vec::new());
        newer.version = VERSION + 1;
        let json = serde_json::to_value(&newer).unwrap();
        let refused = Manifest::checked(serde_json::from_value(json), "raw (commit info)");
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("raw (commit info)")
                && message.contains(&format!("format version {}", VERSION + 1)),
            "{message}"
        );
        let garbled = Manifest::checked(serde_json::from_slice(b"{\"epoch\": 3"), "k.json");
        assert!(garbled.unwrap_err().to_string().contains("k.json"));
        let current = Manifest::of_partition_0(3, "a", 10, Vec::new());
        let read = Manifest::checked(
            serde_json::from_slice(&serde_json::to_vec(&current).unwrap()),
            "k",
        );
        assert_eq!(read.unwrap(), current);
    }

    #[test]
    fn a_version_1_manifest_resumes_its_clock() {
        let v1 = r#"{"version": 1, "epoch": 4, "member": "a", "topic": "t", "watermark": 95,
            "partitions": {"0": {"next": 10, "raw_from": 10, "raw_done": {}, "max_event_ms": 100}},
            "windows": [], "files": []}"#;
        let manifest = Manifest::checked(serde_json::from_str(v1), "k").unwrap();
        let state = &manifest.partitions[&0];
        assert_eq!(state.clock(), EventClock::restore(Some(100), &[], None));
        let written = serde_json::to_string(&Manifest {
            version: VERSION,
            ..manifest
        })
        .unwrap();
        assert!(written.contains(r#""clock":100"#) && !written.contains("max_event_ms"));
    }

    #[test]
    fn progress_is_one_record_per_partition_whichever_part_knows_it() {
        let joined = Progress::join(
            [(1, 40, 30)],
            [(1, 12), (1, 7), (3, 5)],
            [(0, EventClock::restore(Some(900), &[900, 950], Some(990)))],
            [(1, 60)],
        );
        let partitions: Vec<Partition> = joined.iter().map(|p| p.partition).collect();
        assert_eq!(partitions, [0, 1, 3], "in partition order");
        assert_eq!(
            joined[0],
            Progress {
                clock: Some(EventClock::restore(Some(900), &[900, 950], Some(990))),
                ..Progress::of(0)
            },
            "resumed, nothing read yet: its clock alone"
        );
        assert_eq!(
            joined[1],
            Progress {
                partition: 1,
                next: Some(40),
                read: Some(30),
                raw_open_from: Some(7),
                clock: None,
                floor: Some(60),
            },
            "the oldest of its open raw files"
        );
        let mut cursors = Cursors::default();
        let sealed = cursors.seal(&joined);
        assert_eq!(
            (
                sealed[&0].clock,
                &sealed[&0].recent[..],
                sealed[&0].record_max_ms
            ),
            (Some(900), &[900, 950][..], Some(990))
        );
        assert_eq!(sealed[&0].clock(), joined[0].clock.unwrap());
        assert_eq!((sealed[&1].next, sealed[&1].raw_from), (40, 7));
        assert_eq!(sealed[&1].final_to, Some(60));
        assert!(
            !sealed.contains_key(&3),
            "a raw file alone says nothing routed"
        );
    }

    #[test]
    fn raw_cursor_is_the_oldest_open_raw_row() {
        let mut cursors = Cursors::default();
        cursors.raw_file(0, 7, 59);
        cursors.raw_file(0, 8, 89);
        let sealed = cursors.seal(&Progress::join(
            [(0, 100, 100), (1, 50, 50)],
            [(0, 60), (0, 90), (1, 50)],
            [(0, EventClock::restore(Some(123), &[], None))],
            [],
        ));
        assert_eq!(sealed[&0].raw_from, 60);
        assert_eq!(sealed[&0].clock, Some(123));
        assert_eq!(
            sealed[&0].raw_done,
            BTreeMap::from([(8, 90)]),
            "hour 7 ends below the raw cursor"
        );
        assert!(!sealed[&0].raw_missing(80, 8));
        assert!(sealed[&0].raw_missing(95, 8));
        assert!(sealed[&0].raw_missing(61, 9));
        assert_eq!(sealed[&1].raw_from, 50);
        // Replaying, with no raw file open: the raw cursor stays where reading stands, since
        // rows from there to the core cursor are in no file yet.
        let sealed = cursors.seal(&Progress::join([(0, 100, 70)], [], [], []));
        assert_eq!(sealed[&0].raw_from, 70);
        assert_eq!(sealed[&0].raw_done, BTreeMap::from([(8, 90)]));
        // With no raw file open the raw cursor catches up with the core cursor.
        let sealed = cursors.seal(&Progress::join([(0, 100, 100)], [], [], []));
        assert_eq!(sealed[&0].raw_from, 100);
        assert!(sealed[&0].raw_done.is_empty());
    }

    #[test]
    fn manifests_round_trip_and_names_sort_by_epoch() {
        let m = Manifest::sample(7, "m", &[(0, 5)]);
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(serde_json::from_slice::<Manifest>(&json).unwrap(), m);
        assert!(manifest_name(9, "z") < manifest_name(10, "a"));
    }

    proptest! {
        /// Replaying from a sealed state rewrites exactly the raw rows no finished file holds.
        #[test]
        fn replay_rewrites_exactly_the_missing_raw_rows(
            hours in proptest::collection::vec(0i64..4, 1..200),
            cuts in proptest::collection::vec(any::<bool>(), 200),
            checkpoint_at in 0usize..200,
        ) {
            let checkpoint_at = checkpoint_at.min(hours.len());
            // Rows go to one open file per hour; a cut finishes the file of that row's hour.
            let mut open: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            let mut in_files: Vec<i64> = Vec::new();
            let mut cursors = Cursors::default();
            for (offset, &hour) in hours.iter().enumerate().take(checkpoint_at) {
                let offset = offset as i64;
                open.entry(hour).or_default().push(offset);
                if cuts[offset as usize] {
                    let rows = open.remove(&hour).unwrap();
                    cursors.raw_file(0, hour, *rows.last().unwrap());
                    in_files.extend(rows);
                }
            }
            let at = checkpoint_at as i64;
            let firsts = open.values().map(|rows| (0, rows[0]));
            let sealed = cursors.seal(&Progress::join([(0, at, at)], firsts, [], []));
            let state = sealed.get(&0).cloned().unwrap_or_default();
            let mut rewritten: Vec<i64> = (state.raw_from..checkpoint_at as i64)
                .filter(|&o| state.raw_missing(o, hours[o as usize]))
                .collect();
            rewritten.extend(in_files);
            rewritten.sort();
            prop_assert_eq!(rewritten, (0..checkpoint_at as i64).collect::<Vec<_>>());
        }
    }
}
