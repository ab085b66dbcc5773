//! A record → where it goes: valid events to raw and the window operator, malformed ones and
//! late ones to the DLQ, final windows to the aggregated dataset.

use std::time::{Duration, Instant};

use crate::sink::{DeadLetter, SinkError, Sinks};
use crate::source::Record;
use crate::stats::Stats;
use crate::validate::{ErrorKind, validate};
use crate::window::{Assignment, ClosedWindow, Windows};

pub struct Router {
    windows: Windows,
    sinks: Sinks,
    stats: Stats,
    activity: Vec<Activity>,
    idle_timeout: Duration,
}

/// Whether a partition has delivered records lately, checked at each tick.
struct Activity {
    partition: i32,
    seen_since_tick: bool,
    last_seen: Instant,
}

impl Router {
    /// A partition that delivers nothing for `idle_timeout` stops holding the watermark back.
    pub fn new(windows: Windows, sinks: Sinks, idle_timeout: Duration) -> Self {
        Router {
            windows,
            sinks,
            stats: Stats::default(),
            activity: Vec::new(),
            idle_timeout,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn route(&mut self, record: Record<'_>) -> Result<(), SinkError> {
        self.stats.records += 1;
        let partition = record.origin.partition();
        self.seen(partition);
        let event = match validate(record.bytes) {
            Ok(event) => event,
            Err(rejection) => {
                return self.dead_letter(record, rejection.kind, &rejection.message);
            }
        };
        self.stats.valid += 1;
        self.sinks.raw(&event, record.offset)?;
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

    fn emit(&mut self, closed: &[ClosedWindow]) -> Result<(), SinkError> {
        for window in closed {
            self.stats.windows += 1;
            self.stats.window_rows += window.counts.len() as u64;
            self.sinks.window(window)?;
        }
        Ok(())
    }

    fn seen(&mut self, partition: i32) {
        match self.activity.iter_mut().find(|a| a.partition == partition) {
            Some(activity) => activity.seen_since_tick = true,
            None => self.activity.push(Activity {
                partition,
                seen_since_tick: false,
                last_seen: Instant::now(),
            }),
        }
    }

    /// Time-based work: marks quiet partitions idle, which may close windows, and publishes
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
        self.sinks.publish_due(now)?;
        self.count_written();
        Ok(())
    }

    /// The input has ended: every open window is final, and every buffered row is published.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        let closed = self.windows.drain_all();
        self.emit(&closed)?;
        self.sinks.publish_all()?;
        self.count_written();
        Ok(())
    }

    fn count_written(&mut self) {
        for file in self.sinks.take_written() {
            self.stats.file_written(&file);
        }
    }
}
