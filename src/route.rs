//! A record → where it goes: valid events to raw and the window operator, malformed ones and
//! late ones to the DLQ, final windows to the aggregated dataset.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::checkpoint::{PartitionState, Progress, Sealed};
use crate::decode::Decoded;
use crate::future::FutureBound;
use crate::record::{ErrorKind, Offset, Partition, Record, RecordTime};
use crate::sink::{DeadLetter, SinkError, Sinks, WrittenFile, naming};
use crate::stats::RecentWindows;
use crate::stats::Stats;
use crate::storage::Unsynced;
use crate::validate::{Pageview, Rejection};
use crate::window::{Assignment, ClosedWindow, Windows};

pub struct Router {
    windows: Windows,
    sinks: Sinks,
    stats: Stats,
    recent: RecentWindows,
    activity: Vec<Activity>,
    idle_timeout: Duration,
    future: FutureBound,
    /// Restored partitions still below their core cursor: their records are re-read only to
    /// rewrite raw rows that no published file holds.
    replay: BTreeMap<i32, PartitionState>,
    /// A window closed since the last [`Router::seal`]: a checkpoint should publish it now.
    closed_since_seal: bool,
}

/// Whether a partition has delivered records lately, checked at each tick, and how far.
struct Activity {
    partition: i32,
    seen_since_tick: bool,
    last_seen: Instant,
    /// The offset after the last record routed.
    next: i64,
    /// The offset after the last record read, replayed ones included: below `next` while a
    /// restored partition replays.
    read: i64,
}

impl Router {
    /// A partition that delivers nothing for `idle_timeout` stops holding the watermark back;
    /// an event beyond the `future` bound is a dead letter.
    pub fn new(
        windows: Windows,
        sinks: Sinks,
        idle_timeout: Duration,
        future: FutureBound,
    ) -> Self {
        Router {
            windows,
            sinks,
            stats: Stats::default(),
            recent: RecentWindows::default(),
            activity: Vec::new(),
            idle_timeout,
            future,
            replay: BTreeMap::new(),
            closed_since_seal: false,
        }
    }

    /// A router for `assigned` partitions, some `resumed` from a checkpoint (`windows`
    /// restored from it too); records below each one's core cursor only rewrite missing raw
    /// rows. Every assigned partition holds the watermark back until it proves idle.
    pub fn resume(
        mut windows: Windows,
        sinks: Sinks,
        idle_timeout: Duration,
        future: FutureBound,
        assigned: &[i32],
        resumed: BTreeMap<i32, PartitionState>,
    ) -> Self {
        let now = Instant::now();
        let activity = assigned
            .iter()
            .map(|&partition| {
                windows.register(partition);
                Activity {
                    partition,
                    seen_since_tick: false,
                    last_seen: now,
                    next: resumed.get(&partition).map_or(0, |s| s.next),
                    read: resumed.get(&partition).map_or(0, |s| s.raw_from),
                }
            })
            .collect();
        let mut router = Router::new(windows, sinks, idle_timeout, future);
        router.activity = activity;
        router.replay = resumed;
        router
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn watermarks(&self) -> &crate::window::Watermarks {
        self.windows.watermarks()
    }

    /// The windows closed last, for the status page.
    pub fn recent_windows(&self) -> &RecentWindows {
        &self.recent
    }

    /// Keeps counting (and showing windows) where `before`, a router of an earlier
    /// assignment, stopped.
    pub fn continue_stats(&mut self, before: Router) {
        self.stats = before.stats;
        self.recent = before.recent;
    }

    pub fn route(&mut self, decoded: Decoded<'_>) -> Result<(), SinkError> {
        let (record, event) = decoded.event();
        let partition = record.origin.partition();
        if !self.replay.is_empty() && self.replays(partition, record.offset) {
            return self.rewrite_raw(partition, record, event);
        }
        self.stats.records += 1;
        self.seen(partition, record.offset);
        let event = match event {
            Ok(event) => event,
            Err(rejection) => {
                return self.dead_letter(record, rejection.kind, &rejection.message);
            }
        };
        if let Some(ahead) = self.future.check(event.timestamp, record.time) {
            return self.dead_letter(record, ErrorKind::FutureTimestamp, &ahead.to_string());
        }
        self.stats.valid += 1;
        self.sinks.raw(&event, partition, record.offset)?;
        let assigned = self.windows.add(
            partition,
            event.timestamp,
            record.time.map(RecordTime::ms),
            &event.postcode,
        );
        if let Assignment::Late {
            window_start,
            watermark,
        } = assigned
        {
            let size = self.windows.spec().size_ms();
            let message = format!(
                "late event: timestamp {} falls in window [{window_start}, {}), already final at watermark {watermark}",
                event.timestamp,
                window_start + size
            );
            self.dead_letter(record, ErrorKind::LateEvent, &message)?;
        }
        // A late event moves the clock too (it counts among the recent events), so either
        // can make windows final.
        if self.windows.has_final() {
            let closed = self.windows.drain_final();
            self.emit(closed)?;
        }
        Ok(())
    }

    fn dead_letter(
        &mut self,
        record: Record<'_>,
        kind: ErrorKind,
        message: &str,
    ) -> Result<(), SinkError> {
        self.stats.dead_letter(kind);
        self.sinks.dead_letter(&DeadLetter {
            payload: record.bytes,
            kind,
            message,
            origin: record.origin,
            offset: record.offset,
        })
    }

    /// True while `partition` is below its core cursor; forgets the partition once past it.
    fn replays(&mut self, partition: i32, offset: i64) -> bool {
        match self.replay.get(&partition) {
            Some(state) if offset < state.next => true,
            Some(_) => {
                self.replay.remove(&partition);
                false
            }
            None => false,
        }
    }

    /// A record the windows and the DLQ already have: only its raw row may be missing.
    fn rewrite_raw(
        &mut self,
        partition: i32,
        record: Record<'_>,
        event: Result<Pageview<'_>, Rejection>,
    ) -> Result<(), SinkError> {
        self.stats.replayed += 1;
        self.seen(partition, record.offset);
        let Ok(event) = event else {
            return Ok(());
        };
        if self.future.check(event.timestamp, record.time).is_some() {
            return Ok(());
        }
        let state = &self.replay[&partition];
        if state.raw_missing(record.offset, naming::hour_of(event.timestamp)) {
            self.sinks.raw(&event, partition, record.offset)?;
        }
        Ok(())
    }

    fn emit(&mut self, closed: Vec<ClosedWindow>) -> Result<(), SinkError> {
        self.closed_since_seal |= !closed.is_empty();
        for window in closed {
            self.stats.windows += 1;
            self.stats.window_rows += window.counts.len() as u64;
            self.sinks.window(&window)?;
            self.recent.closed(window);
        }
        Ok(())
    }

    fn seen(&mut self, partition: i32, offset: i64) {
        match self.activity.iter_mut().find(|a| a.partition == partition) {
            Some(activity) => {
                activity.seen_since_tick = true;
                activity.next = activity.next.max(offset + 1);
                activity.read = offset + 1;
            }
            None => self.activity.push(Activity {
                partition,
                seen_since_tick: false,
                last_seen: Instant::now(),
                next: offset + 1,
                read: offset + 1,
            }),
        }
    }

    /// Whether every partition this router owns was read up to its `ends` (partition, offset
    /// after the last record); partitions not in `ends` have nothing to read.
    pub fn has_read(&self, ends: &[(Partition, Offset)]) -> bool {
        self.activity.iter().all(|a| {
            ends.iter()
                .find(|(p, _)| *p == a.partition)
                .is_none_or(|(_, end)| a.read >= *end)
        })
    }

    /// Time-based work: marks quiet partitions idle, which may close windows, and finishes
    /// files that reached the age limit.
    pub fn tick(&mut self, now: Instant) -> Result<(), SinkError> {
        self.future.tick(now);
        let mut moved = false;
        for activity in &mut self.activity {
            if std::mem::take(&mut activity.seen_since_tick) {
                activity.last_seen = now;
            } else if now.duration_since(activity.last_seen) >= self.idle_timeout {
                // Idempotent: an already idle partition moves nothing.
                moved |= self.windows.set_idle(activity.partition);
            }
        }
        if moved {
            let closed = self.windows.drain_final();
            self.emit(closed)?;
        }
        self.sinks.finish_due(now)
    }

    /// Makes every finished file visible at once: for inputs that need no checkpoint.
    /// Returns the files published. Their bytes are all on their way to the disk before the
    /// first is synced, and each folder they went to is synced once after all of them.
    pub fn publish_finished(&mut self) -> Result<Vec<WrittenFile>, SinkError> {
        let mut finished = self.sinks.take_finished();
        for file in &mut finished {
            file.file.write_behind()?;
        }
        let mut published = Vec::with_capacity(finished.len());
        let mut folders: Vec<Unsynced> = Vec::new();
        for file in finished {
            let (written, unsynced) = file.publish_unsynced()?;
            published.push(written);
            if let Some(folder) = unsynced
                && !folders.iter().any(|f| f.same_folder(&folder))
            {
                folders.push(folder);
            }
        }
        for folder in &folders {
            folder.sync()?;
        }
        for written in &published {
            self.stats.file_written(written);
        }
        Ok(published)
    }

    /// The input has ended: every open window is final, and every buffered row is published.
    /// Returns the files published.
    pub fn finish(&mut self) -> Result<Vec<WrittenFile>, SinkError> {
        let closed = self.windows.drain_all();
        self.emit(closed)?;
        self.sinks.finish_all()?;
        let published = self.publish_finished()?;
        self.sinks.ensure_dlq_file()?;
        Ok(published)
    }

    /// True when a window closed since the last seal, so a checkpoint should come now.
    pub fn has_closed_windows(&self) -> bool {
        self.closed_since_seal
    }

    /// Everything a checkpoint needs. Final windows and dead letters always go into files;
    /// raw files only when due, or all of them when `stopping`.
    pub fn seal(&mut self, stopping: bool) -> Result<Sealed, SinkError> {
        // A checkpoint never holds open a window its watermark made final: the group reads
        // its watermark as how far its windows are published. Resuming can find some so.
        if self.windows.has_final() {
            let closed = self.windows.drain_final();
            self.emit(closed)?;
        }
        if stopping {
            self.sinks.finish_all()?;
        } else {
            self.sinks.finish_ordered()?;
        }
        self.closed_since_seal = false;
        let watermarks = self.windows.watermarks();
        let partitions = Progress::join(
            self.activity.iter().map(|a| (a.partition, a.next, a.read)),
            self.sinks.raw_unfinished(),
            watermarks.clocks(),
            watermarks.floors(),
        );
        Ok(Sealed {
            finished: self.sinks.take_finished(),
            partitions,
            watermark: self.windows.watermark(),
            windows: self.windows.open_counts(),
        })
    }

    /// Counts files a checkpoint published.
    pub fn published(&mut self, files: &[WrittenFile]) {
        for file in files {
            self.stats.file_written(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parquet::basic::Compression;

    use super::*;
    use crate::record::Origin;
    use crate::sink::{Dataset, SinkConfig, Tags};
    use crate::storage::{Buckets, LocalStorage, Storage};
    use crate::window::{EventClock, WindowSpec};

    const T0: i64 = 1_700_000_040_000;

    fn router_config() -> SinkConfig {
        SinkConfig {
            buckets: Buckets::new(["raw", "agg", "dlq"].map(String::from), "cp".into()),
            tags: Tags::Fixed("t".into()),
            max_file_bytes: 128 << 20,
            max_file_age: Duration::from_secs(3600),
            compression: Compression::SNAPPY,
            partials: None,
            workers: crate::workers::Workers::none(),
        }
    }

    fn router(dir: &std::path::Path) -> (Router, Arc<dyn Storage>) {
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir).unwrap());
        let windows = Windows::new(WindowSpec::new(60_000), 5_000);
        let sinks = Sinks::new(storage.clone(), &router_config());
        (
            Router::new(windows, sinks, Duration::from_secs(30), FutureBound::off()),
            storage,
        )
    }

    fn event(postcode: &str, timestamp: i64) -> Vec<u8> {
        format!(
            r#"{{"user_id": 7, "postcode": "{postcode}", "webpage": "https://w.example/", "timestamp": {timestamp}}}"#
        )
        .into_bytes()
    }

    /// Routes `records` as offsets 0, 1, … of partition `partition` of topic `t`.
    fn route_all(router: &mut Router, partition: i32, records: &[Vec<u8>]) {
        let origin = Origin::Topic {
            topic: "t".into(),
            partition,
        };
        for (offset, bytes) in records.iter().enumerate() {
            router
                .route(Decoded::new(Record {
                    bytes,
                    offset: offset as i64,
                    origin: &origin,
                    time: None,
                }))
                .unwrap();
        }
    }

    #[test]
    fn a_checkpoint_holds_no_window_its_watermark_made_final() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let clock = EventClock::restore(Some(T0 + 70_000), &[], None);
        let open = crate::window::OpenCount {
            window_start: T0,
            partition: 0,
            postcode: "E1".into(),
            count: 2,
        };
        // Resumed where the partition's clock is past the window the checkpoint left open:
        // final before any record comes.
        let windows = Windows::restore(
            WindowSpec::new(60_000),
            crate::window::Watermarks::restore(5_000, Some(T0 + 30_000), &[(0, clock)], &[]),
            &[open],
        );
        let mut router = Router::resume(
            windows,
            Sinks::new(storage, &router_config()),
            Duration::from_secs(30),
            FutureBound::off(),
            &[0],
            BTreeMap::new(),
        );
        let sealed = router.seal(false).unwrap();
        assert_eq!(sealed.watermark, Some(T0 + 65_000));
        assert!(sealed.windows.is_empty(), "{:?}", sealed.windows);
        assert_eq!(sealed.finished.len(), 1);
        assert_eq!(sealed.finished[0].dataset, Dataset::Aggregated);
    }

    #[test]
    fn every_record_lands_in_raw_or_the_dlq_and_windows_close_on_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (mut router, storage) = router(dir.path());
        route_all(
            &mut router,
            0,
            &[
                event("SW19", T0),
                event("E1", T0 + 1_000),
                event("SW19", T0 + 2_000),
                b"not json".to_vec(),
                // Past the first window's end plus the 5 s bound, three times: the clock
                // follows and the window is final.
                event("N1", T0 + 66_000),
                event("N1", T0 + 66_500),
                event("N1", T0 + 67_000),
                // Its window is final: late, archived in raw and dead-lettered.
                event("E1", T0 + 3_000),
            ],
        );
        let stats = router.stats();
        assert_eq!((stats.records, stats.valid), (8, 7));
        assert_eq!(stats.dead_letters(ErrorKind::InvalidJson), 1);
        assert_eq!(stats.late(), 1);
        assert_eq!((stats.windows, stats.window_rows), (1, 2), "SW19 and E1");
        assert!(router.has_closed_windows());
        assert_eq!(router.recent_windows().latest().count(), 1);
        assert!(router.has_read(&[(0, 8)]));
        assert!(!router.has_read(&[(0, 9)]));

        router.finish().unwrap();
        let stats = router.stats();
        assert_eq!(stats.written(Dataset::Raw).rows, 7, "late ones included");
        assert_eq!(stats.written(Dataset::Dlq).rows, 2);
        assert_eq!(
            stats.written(Dataset::Aggregated).rows,
            3,
            "the open window closes at the end: N1"
        );
        assert_eq!(stats.windows, 2);
        let published = storage.list_files("raw").unwrap();
        assert_eq!(published.len(), 1);
        assert_eq!(
            published[0].path,
            "dt=2023-11-14/event_hour=22/part-t-000000000000-000000000007.parquet",
            "named by the first and last offset it holds"
        );
    }

    #[test]
    fn an_event_beyond_the_future_bound_is_a_dead_letter_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (fresh, storage) = router(dir.path());
        let Router { windows, sinks, .. } = fresh;
        let skew = Some(Duration::from_secs(3600));
        let future = FutureBound::new(skew, Some(T0), 0, Instant::now());
        let mut router = Router::new(windows, sinks, Duration::from_secs(30), future);
        let origin = Origin::Topic {
            topic: "t".into(),
            partition: 0,
        };
        let year_2099 = 4_070_908_800_000;
        let records = [
            (event("E1", T0), None),
            (event("E1", year_2099), None),
            (
                event("E1", T0 + 2 * 3_600_000),
                Some(RecordTime::CreateTime(T0 + 3_600_000)),
            ),
            (
                event("E1", T0 + 2 * 3_600_000 + 1),
                Some(RecordTime::LogAppendTime(T0 + 3_600_000)),
            ),
        ];
        for (offset, (bytes, time)) in records.iter().enumerate() {
            let record = Record {
                bytes,
                offset: offset as i64,
                origin: &origin,
                time: *time,
            };
            router.route(Decoded::new(record)).unwrap();
        }
        let stats = router.stats();
        assert_eq!((stats.records, stats.valid), (4, 2));
        assert_eq!(stats.dead_letters(ErrorKind::FutureTimestamp), 2);
        router.finish().unwrap();
        let raw = storage.list_files("raw").unwrap();
        assert!(
            raw.iter().all(|f| f.path.starts_with("dt=2023-11-1")),
            "{raw:?}"
        );
        assert_eq!(
            router.stats().written(Dataset::Aggregated).rows,
            2,
            "two windows of E1"
        );
    }

    #[test]
    fn a_seal_finishes_final_windows_and_dead_letters_and_raw_files_only_when_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let (mut router, _) = router(dir.path());
        let ahead = T0 + 66_000;
        route_all(
            &mut router,
            2,
            &[
                event("SW19", T0),
                b"{}".to_vec(),
                event("E1", ahead),
                event("E1", ahead),
                event("E1", ahead),
            ],
        );
        let sealed = router.seal(false).unwrap();
        let datasets: Vec<Dataset> = sealed.finished.iter().map(|f| f.dataset).collect();
        assert!(datasets.contains(&Dataset::Aggregated) && datasets.contains(&Dataset::Dlq));
        assert!(
            !datasets.contains(&Dataset::Raw),
            "raw stays open: {datasets:?}"
        );
        assert_eq!(
            sealed.partitions,
            [Progress {
                partition: 2,
                next: Some(5),
                read: Some(5),
                raw_open_from: Some(0),
                clock: Some(EventClock::restore(
                    Some(ahead),
                    &[T0, ahead, ahead, ahead],
                    None
                )),
                floor: None,
            }],
            "raw rows from offset 0 are open"
        );
        assert_eq!(sealed.watermark, Some(T0 + 61_000));
        assert!(!router.has_closed_windows(), "a seal takes them");
        let stopping = router.seal(true).unwrap();
        assert_eq!(stopping.finished.len(), 1);
        assert_eq!(stopping.finished[0].dataset, Dataset::Raw);
        assert_eq!(stopping.finished[0].rows, 4);
        assert_eq!(stopping.partitions[0].raw_open_from, None);
    }

    #[test]
    fn a_resumed_partition_below_its_cursor_rewrites_only_missing_raw_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (fresh, _) = router(dir.path());
        let hour = naming::hour_of(T0);
        let state = PartitionState {
            next: 3,
            raw_from: 0,
            // The hour's raw rows up to offset 1 are published.
            raw_done: [(hour, 1)].into(),
            clock: Some(T0 + 2_000),
            ..PartitionState::default()
        };
        let Router { windows, sinks, .. } = fresh;
        let mut router = Router::resume(
            windows,
            sinks,
            Duration::from_secs(30),
            FutureBound::off(),
            &[0],
            [(0, state)].into(),
        );
        route_all(
            &mut router,
            0,
            &[
                event("SW19", T0),
                event("E1", T0 + 1_000),
                b"bad".to_vec(),
                event("N1", T0 + 3_000),
            ],
        );
        let stats = router.stats();
        assert_eq!(stats.replayed, 3, "offsets 0, 1 and 2 were done");
        assert_eq!((stats.records, stats.valid), (1, 1), "offset 3 is new");
        assert_eq!(
            stats.total_dead_letters(),
            0,
            "the DLQ had offset 2 already"
        );
        router.finish().unwrap();
        assert_eq!(
            router.stats().written(Dataset::Raw).rows,
            2,
            "offset 1 (missing) and 3 (new)"
        );
    }
}
