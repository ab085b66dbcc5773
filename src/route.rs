//! A record → where it goes: valid events to raw and the window operator, malformed ones and
//! late ones to the DLQ, final windows to the aggregated dataset.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::checkpoint::{PartitionState, Sealed};
use crate::sink::{DeadLetter, SinkError, Sinks, naming};
use crate::source::Record;
use crate::stats::Stats;
use crate::status::RecentWindows;
use crate::validate::{ErrorKind, validate};
use crate::window::{Assignment, ClosedWindow, Windows};

pub struct Router {
    windows: Windows,
    sinks: Sinks,
    stats: Stats,
    recent: RecentWindows,
    activity: Vec<Activity>,
    idle_timeout: Duration,
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
    /// A partition that delivers nothing for `idle_timeout` stops holding the watermark back.
    pub fn new(windows: Windows, sinks: Sinks, idle_timeout: Duration) -> Self {
        Router {
            windows,
            sinks,
            stats: Stats::default(),
            recent: RecentWindows::default(),
            activity: Vec::new(),
            idle_timeout,
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
        let mut router = Router::new(windows, sinks, idle_timeout);
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

    pub fn route(&mut self, record: Record<'_>) -> Result<(), SinkError> {
        let partition = record.origin.partition();
        if !self.replay.is_empty() && self.replays(partition, record.offset) {
            return self.rewrite_raw(partition, record);
        }
        self.stats.records += 1;
        self.seen(partition, record.offset);
        let event = match validate(record.bytes) {
            Ok(event) => event,
            Err(rejection) => {
                return self.dead_letter(record, rejection.kind, &rejection.message);
            }
        };
        self.stats.valid += 1;
        self.sinks.raw(&event, partition, record.offset)?;
        match self
            .windows
            .add(partition, event.timestamp, &event.postcode)
        {
            Assignment::OnTime if self.windows.has_final() => {
                let closed = self.windows.drain_final();
                self.emit(&closed)
            }
            Assignment::OnTime => Ok(()),
            Assignment::Late {
                window_start,
                watermark,
            } => {
                let size = self.windows.spec().size_ms();
                let message = format!(
                    "late event: timestamp {} falls in window [{window_start}, {}), already final at watermark {watermark}",
                    event.timestamp,
                    window_start + size
                );
                self.dead_letter(record, ErrorKind::LateEvent, &message)
            }
        }
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
    fn rewrite_raw(&mut self, partition: i32, record: Record<'_>) -> Result<(), SinkError> {
        self.stats.replayed += 1;
        self.seen(partition, record.offset);
        let Ok(event) = validate(record.bytes) else {
            return Ok(());
        };
        let state = &self.replay[&partition];
        if state.raw_missing(record.offset, naming::hour_of(event.timestamp)) {
            self.sinks.raw(&event, partition, record.offset)?;
        }
        Ok(())
    }

    fn emit(&mut self, closed: &[ClosedWindow]) -> Result<(), SinkError> {
        self.closed_since_seal |= !closed.is_empty();
        for window in closed {
            self.stats.windows += 1;
            self.stats.window_rows += window.counts.len() as u64;
            self.recent.closed(window);
            self.sinks.window(window)?;
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
    pub fn has_read(&self, ends: &[(i32, i64)]) -> bool {
        self.activity.iter().all(|a| {
            ends.iter()
                .find(|(p, _)| *p == a.partition)
                .is_none_or(|(_, end)| a.read >= *end)
        })
    }

    /// Time-based work: marks quiet partitions idle, which may close windows, and finishes
    /// files that reached the age limit.
    pub fn tick(&mut self, now: Instant) -> Result<(), SinkError> {
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
            self.emit(&closed)?;
        }
        self.sinks.finish_due(now)
    }

    /// Makes every finished file visible at once: for inputs that need no checkpoint.
    pub fn publish_finished(&mut self) -> Result<(), SinkError> {
        for file in self.sinks.take_finished() {
            let written = file.publish()?;
            self.stats.file_written(&written);
        }
        Ok(())
    }

    /// The input has ended: every open window is final, and every buffered row is published.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        let closed = self.windows.drain_all();
        self.emit(&closed)?;
        self.sinks.finish_all()?;
        self.publish_finished()?;
        self.sinks.ensure_dlq_file()
    }

    /// True when a window closed since the last seal, so a checkpoint should come now.
    pub fn has_closed_windows(&self) -> bool {
        self.closed_since_seal
    }

    /// Everything a checkpoint needs. Final windows and dead letters always go into files;
    /// raw files only when due, or all of them when `stopping`.
    pub fn seal(&mut self, stopping: bool) -> Result<Sealed, SinkError> {
        if stopping {
            self.sinks.finish_all()?;
        } else {
            self.sinks.finish_ordered()?;
        }
        self.closed_since_seal = false;
        Ok(Sealed {
            finished: self.sinks.take_finished(),
            next: self
                .activity
                .iter()
                .map(|a| (a.partition, a.next))
                .collect(),
            read: self
                .activity
                .iter()
                .map(|a| (a.partition, a.read))
                .collect(),
            raw_unfinished: self.sinks.raw_unfinished().collect(),
            clocks: self.windows.watermarks().clocks().collect(),
            watermark: self.windows.watermark(),
            windows: self.windows.open_counts(),
        })
    }

    /// Counts files a checkpoint published.
    pub fn published(&mut self, files: &[crate::sink::WrittenFile]) {
        for file in files {
            self.stats.file_written(file);
        }
    }
}
