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
use crate::window::{EventClock, OpenCount, Watermarks, WindowSpec, Windows};

/// Bumped when the manifest format changes, so an old processor refuses a newer manifest.
/// Version 2 saves each partition's recent event times and record timestamps with its clock;
/// a version 1 manifest is still read (its clock resumes, its recent times start empty).
pub const VERSION: u32 = 2;

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
    /// The processor's watermark, which never moves back.
    pub watermark: Option<EventMs>,
    pub partitions: BTreeMap<Partition, PartitionState>,
    /// Open window counts of these partitions.
    pub windows: Vec<OpenCount>,
    /// Staged files this checkpoint publishes.
    pub files: Vec<StagedFile>,
}

impl Manifest {
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
                "format version {} (this build reads {VERSION})",
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

/// What the partitions a processor was just given resume from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovery {
    /// The epoch of this processor's next manifest: above every one found.
    pub epoch: u64,
    pub watermark: Option<EventMs>,
    /// Assigned partitions with a saved state; the others start at their beginning.
    pub partitions: BTreeMap<Partition, PartitionState>,
    pub windows: Vec<OpenCount>,
    /// The epoch of the manifest each assigned partition's state comes from.
    pub committed: BTreeMap<Partition, u64>,
    /// Those manifests, newest first.
    pub from: Vec<Manifest>,
    /// Staged files that may not be published yet: those of each member's newest manifest
    /// (a member publishes a manifest's files before it writes the next).
    pub unpublished: Vec<StagedFile>,
    /// Names of manifests whose every partition is assigned here: this processor's first
    /// manifest supersedes them.
    pub replaced: Vec<String>,
    /// Names of manifests no recovery can pick any more, deleted once the recovery is
    /// complete.
    pub superseded: Vec<String>,
}

impl Recovery {
    /// Where each assigned partition's reading starts: its raw cursor, or the beginning.
    pub fn start(&self, partition: Partition) -> Option<Offset> {
        self.partitions.get(&partition).map(|s| s.raw_from)
    }

    /// The window operator of `assigned` as the manifests left it.
    pub fn windows(
        &self,
        spec: WindowSpec,
        watermark_bound_ms: i64,
        assigned: &[Partition],
    ) -> Windows {
        let clocks: Vec<(Partition, EventClock)> = assigned
            .iter()
            .map(|p| {
                (
                    *p,
                    self.partitions
                        .get(p)
                        .map(PartitionState::clock)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let floors: Vec<(Partition, EventMs)> = self
            .partitions
            .iter()
            .filter_map(|(&p, s)| Some((p, s.final_to?)))
            .collect();
        let watermarks = Watermarks::restore(watermark_bound_ms, self.watermark, &clocks, &floors);
        Windows::restore(spec, watermarks, &self.windows)
    }
}

/// The newest saved state of each partition in `assigned`, from all manifests of the group.
pub fn recover(manifests: &[Manifest], assigned: &[Partition]) -> Recovery {
    let mut recovery = Recovery {
        epoch: manifests.iter().map(|m| m.epoch + 1).max().unwrap_or(0),
        ..Recovery::default()
    };
    for &partition in assigned {
        let Some(newest) = manifests
            .iter()
            .filter(|m| m.partitions.contains_key(&partition))
            .max_by_key(|m| m.epoch)
        else {
            continue;
        };
        let mut state = newest.partitions[&partition].clone();
        state.final_to = state.final_to.max(newest.watermark);
        recovery.partitions.insert(partition, state);
        recovery.committed.insert(partition, newest.epoch);
        if !recovery.from.iter().any(|m| m == newest) {
            recovery.from.push(newest.clone());
        }
        recovery.windows.extend(
            newest
                .windows
                .iter()
                .filter(|c| c.partition == partition)
                .cloned(),
        );
    }
    recovery.watermark = resumed_watermark(&recovery.partitions, assigned);
    let mut newest_of_member: BTreeMap<&str, &Manifest> = BTreeMap::new();
    for m in manifests {
        let entry = newest_of_member.entry(&m.member).or_insert(m);
        if m.epoch > entry.epoch {
            *entry = m;
        }
    }
    recovery.from.sort_by_key(|m| std::cmp::Reverse(m.epoch));
    recovery.unpublished = newest_of_member
        .into_values()
        .flat_map(|m| m.files.iter().cloned())
        .collect();
    recovery
}

/// The watermark a processor resumes `assigned` with: the lowest they were final up to (none
/// for a partition no checkpoint has). One processor's watermark can be far ahead of
/// another's (its own partitions read to the end while the other's waited for the group to
/// notice their owner was gone); resuming all under the highest would make the waiting
/// partitions' records late that their own owner would have counted. Each partition keeps
/// what it was final up to as its floor, so no window of it opens again.
fn resumed_watermark(
    partitions: &BTreeMap<Partition, PartitionState>,
    assigned: &[Partition],
) -> Option<EventMs> {
    assigned
        .iter()
        .map(|p| partitions.get(p).and_then(|s| s.final_to))
        .min()
        .flatten()
}

/// Manifests no recovery can pick any more: every partition in them is in a later manifest.
/// Their files are published: the writer publishes before its next manifest, and a new owner
/// recovers (publishing the last manifest's files) before its first.
pub fn superseded(manifests: &[Manifest]) -> Vec<usize> {
    (0..manifests.len())
        .filter(|&i| {
            let m = &manifests[i];
            m.partitions.keys().all(|p| {
                manifests
                    .iter()
                    .any(|o| o.epoch > m.epoch && o.partitions.contains_key(p))
            })
        })
        .collect()
}

/// Manifests a processor given `assigned` replaces with its first manifest: every partition
/// of theirs is now its own (and so in every manifest it writes).
pub fn replaced(manifests: &[(String, Manifest)], assigned: &[Partition]) -> Vec<String> {
    manifests
        .iter()
        .filter(|(_, m)| m.partitions.keys().all(|p| assigned.contains(p)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Sorts a group's `named` manifests for a processor given `assigned`: the names of those
/// no recovery can pick any more ([`superseded`]), and of those its first manifest replaces
/// ([`replaced`]) among the rest.
pub fn sort_out(
    named: Vec<(String, Manifest)>,
    assigned: &[Partition],
) -> (Vec<String>, Vec<String>) {
    let manifests: Vec<Manifest> = named.iter().map(|(_, m)| m.clone()).collect();
    let old = superseded(&manifests);
    let (gone, current): (Vec<_>, Vec<_>) = named
        .into_iter()
        .enumerate()
        .partition(|(i, _)| old.contains(i));
    let current: Vec<(String, Manifest)> = current.into_iter().map(|(_, n)| n).collect();
    (
        gone.into_iter().map(|(_, (name, _))| name).collect(),
        replaced(&current, assigned),
    )
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

    fn state(next: i64, raw_from: i64) -> PartitionState {
        PartitionState {
            next,
            raw_from,
            ..PartitionState::default()
        }
    }

    fn manifest(epoch: u64, member: &str, partitions: &[(i32, i64)]) -> Manifest {
        Manifest {
            version: VERSION,
            epoch,
            member: member.into(),
            topic: "t".into(),
            watermark: Some(epoch as i64 * 1000),
            partitions: partitions
                .iter()
                .map(|&(p, next)| (p, state(next, next)))
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

    #[test]
    fn each_partition_resumes_from_its_newest_manifest() {
        // a owned 0..=2, then b took partition 2 (and wrote later epochs).
        let all = [
            manifest(1, "a", &[(0, 10), (1, 10), (2, 10)]),
            manifest(2, "a", &[(0, 20), (1, 20), (2, 20)]),
            manifest(3, "b", &[(2, 25)]),
            manifest(4, "a", &[(0, 30), (1, 30)]),
        ];
        let r = recover(&all, &[1, 2, 5]);
        assert_eq!(r.epoch, 5);
        assert_eq!(r.partitions[&1].next, 30);
        assert_eq!(r.partitions[&2].next, 25);
        assert!(
            !r.partitions.contains_key(&5),
            "never seen: from the beginning"
        );
        assert_eq!(r.start(5), None);
        assert_eq!(r.watermark, None, "5 has nothing final yet");
        assert_eq!(
            recover(&all, &[1, 2]).watermark,
            Some(3000),
            "b's watermark: a's was ahead of partition 2"
        );
        let floors: Vec<_> = r.partitions.values().map(|s| s.final_to).collect();
        assert_eq!(
            floors,
            [Some(4000), Some(3000)],
            "each as far as it was final"
        );
        let counts: Vec<_> = r.windows.iter().map(|c| (c.partition, c.count)).collect();
        assert_eq!(counts, [(1, 30), (2, 25)]);
        let mut unpublished: Vec<_> = r.unpublished.iter().map(|f| f.key.as_str()).collect();
        unpublished.sort();
        assert_eq!(unpublished, ["k3", "k4"], "each member's newest manifest");
        assert_eq!(r.committed, BTreeMap::from([(1, 4), (2, 3)]));
        let from: Vec<u64> = r.from.iter().map(|m| m.epoch).collect();
        assert_eq!(
            from,
            [4, 3],
            "the manifests the states come from, newest first"
        );
        assert_eq!(
            superseded(&all),
            [0, 1],
            "a's older ones: every partition is later"
        );
        assert_eq!(recover(&[], &[0]), Recovery::default());
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
        let m = manifest(7, "m", &[(0, 5)]);
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(serde_json::from_slice::<Manifest>(&json).unwrap(), m);
        assert!(manifest_name(9, "z") < manifest_name(10, "a"));
    }

    const MINUTE: i64 = 60_000;

    /// Routes `times` of partition `p` (postcode `P<p>`) into `ws`, collecting the windows
    /// that close as (start, postcode, count); whether each was late.
    fn feed(
        ws: &mut Windows,
        p: i32,
        times: &[i64],
        emitted: &mut Vec<(i64, String, i64)>,
    ) -> Vec<bool> {
        let postcode = format!("P{p}");
        let mut late = Vec::new();
        for &t in times {
            late.push(ws.add(p, t, None, &postcode) != crate::window::Assignment::OnTime);
            for w in ws.drain_final() {
                emitted.extend(w.counts.into_iter().map(|(c, n)| (w.start, c.into(), n)));
            }
        }
        late
    }

    /// The checkpoint of a processor that owned partition `p` alone and routed `next` of it.
    fn checkpoint_of(ws: &Windows, epoch: u64, p: i32, next: usize) -> Manifest {
        let clock = ws
            .watermarks()
            .clocks()
            .find(|&(q, _)| q == p)
            .map(|(_, c)| c);
        let state = PartitionState {
            next: next as i64,
            raw_from: next as i64,
            clock: clock.and_then(|c| c.time()),
            recent: clock.map(|c| c.recent()).unwrap_or_default(),
            record_max_ms: clock.and_then(|c| c.record_max()),
            final_to: ws
                .watermarks()
                .floors()
                .find(|&(q, _)| q == p)
                .map(|(_, f)| f),
            ..PartitionState::default()
        };
        Manifest {
            version: VERSION,
            epoch,
            member: format!("m{p}"),
            topic: "t".into(),
            watermark: ws.watermark(),
            partitions: BTreeMap::from([(p, state)]),
            windows: ws.open_counts(),
            files: Vec::new(),
        }
    }

    /// A partition's events: about in order (within the 5 s bound), now and then one ten
    /// minutes late.
    fn stream() -> impl Strategy<Value = Vec<i64>> {
        proptest::collection::vec((1_000i64..40_000, 0i64..4_000, 0u8..20), 0..120).prop_map(
            |steps| {
                let mut t = 100 * MINUTE;
                steps
                    .into_iter()
                    .map(|(step, jitter, late)| {
                        t += step;
                        if late == 0 {
                            t - 10 * MINUTE
                        } else {
                            t - jitter
                        }
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// Two processors each owned one partition and got as far as they got; a third takes
        /// both over from their checkpoints. No window of a partition closes twice, no record
        /// is late there that its own owner would have counted, and every record is counted
        /// or late exactly once.
        #[test]
        fn partitions_taken_over_from_two_processors_stay_exactly_once(
            streams in [stream(), stream()],
            cuts in (0usize..=120, 0usize..=120),
        ) {
            let cuts = [cuts.0.min(streams[0].len()), cuts.1.min(streams[1].len())];
            let new = || Windows::new(WindowSpec::new(MINUTE), 5_000);
            let mut emitted = Vec::new();
            let mut manifests = Vec::new();
            let mut alone = Vec::new();
            let mut late = 0;
            for p in 0..2 {
                let times = &streams[p];
                let mut owner = new();
                owner.register(p as i32);
                late += feed(&mut owner, p as i32, &times[..cuts[p]], &mut emitted)
                    .into_iter()
                    .filter(|&l| l)
                    .count();
                manifests.push(checkpoint_of(&owner, p as u64 + 1, p as i32, cuts[p]));
                let mut whole = new();
                whole.register(p as i32);
                alone.push(feed(&mut whole, p as i32, times, &mut Vec::new()));
            }
            let recovery = recover(&manifests, &[0, 1]);
            let mut taker = recovery.windows(WindowSpec::new(MINUTE), 5_000, &[0, 1]);
            let longest = streams.iter().map(Vec::len).max().unwrap();
            for i in 0..longest {
                for p in 0..2 {
                    if i < cuts[p] || i >= streams[p].len() {
                        continue;
                    }
                    let judged = feed(&mut taker, p as i32, &streams[p][i..=i], &mut emitted)[0];
                    prop_assert!(
                        !judged || alone[p][i],
                        "record {} of partition {} is late here, not at its owner", i, p
                    );
                    late += usize::from(judged);
                }
            }
            for w in taker.drain_all() {
                emitted.extend(w.counts.into_iter().map(|(c, n)| (w.start, c.into(), n)));
            }
            let mut closed = std::collections::HashSet::new();
            for (start, postcode, _) in &emitted {
                prop_assert!(closed.insert((start, postcode)), "window {} of {} closed twice", start, postcode);
            }
            let counted: i64 = emitted.iter().map(|(_, _, n)| n).sum();
            prop_assert_eq!(counted as usize + late, streams[0].len() + streams[1].len());
        }

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
