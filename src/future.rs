//! How far ahead of the time that vouches for it an event may be (docs/CONTRACT.md 3): an
//! event from a clock set a day or a century ahead is a dead letter, `future_timestamp`,
//! before it can reach a window, a watermark or a raw partition such as `dt=2099-…`.
//!
//! The reference is a Kafka record's own timestamp, so every replay of the record decides the
//! same; a file or stdin has none, so its records are judged against the clock as the run
//! reads them (taken at start and at every tick), or against a pinned time for reproducible
//! backfills.

use std::fmt;
use std::time::{Duration, Instant};

use crate::record::{EventMs, RecordTime};

/// The bound, and the clock records without a time of their own are judged against.
#[derive(Debug, Clone)]
pub struct FutureBound {
    /// `EventMs::MAX`: no bound (`--max-future-skew off`).
    skew_ms: EventMs,
    fallback: Fallback,
    /// The fallback plus the skew: the latest event time a record without a time may have.
    fallback_limit: EventMs,
}

#[derive(Debug, Clone, Copy)]
enum Fallback {
    /// The wall clock: `ms` as of the last tick, from `start_ms` at `started` (measured from
    /// the start each time, so that ticks do not add up rounding).
    Clock {
        ms: EventMs,
        start_ms: EventMs,
        started: Instant,
    },
    /// `--reference-time-ms`.
    Pinned(EventMs),
}

/// What an event was judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    Record(RecordTime),
    Clock(EventMs),
    Pinned(EventMs),
}

impl Reference {
    pub fn ms(self) -> EventMs {
        match self {
            Reference::Record(time) => time.ms(),
            Reference::Clock(ms) | Reference::Pinned(ms) => ms,
        }
    }

    fn source(self) -> &'static str {
        match self {
            Reference::Record(RecordTime::CreateTime(_)) => "the Kafka record's CreateTime",
            Reference::Record(RecordTime::LogAppendTime(_)) => "the Kafka record's LogAppendTime",
            Reference::Clock(_) => "the clock as the record was read",
            Reference::Pinned(_) => "--reference-time-ms",
        }
    }
}

/// An event beyond the bound: its dead letter's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahead {
    pub event_ms: EventMs,
    pub reference: Reference,
    pub skew_ms: EventMs,
}

impl fmt::Display for Ahead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reference = self.reference.ms();
        write!(
            f,
            "future timestamp: {} ({}) is {} ahead of its reference time {} ({}, {}); the bound is --max-future-skew {}",
            self.event_ms,
            utc(self.event_ms),
            span(self.event_ms.saturating_sub(reference)),
            reference,
            utc(reference),
            self.reference.source(),
            span(self.skew_ms),
        )
    }
}

impl FutureBound {
    /// `skew`: how far ahead an event may be (`None`: any distance). `pinned`: the reference
    /// of records without a time of their own, else the clock, `now_ms` at `now`.
    pub fn new(
        skew: Option<Duration>,
        pinned: Option<EventMs>,
        now_ms: EventMs,
        now: Instant,
    ) -> Self {
        let skew_ms = skew.map_or(EventMs::MAX, |s| {
            EventMs::try_from(s.as_millis()).unwrap_or(EventMs::MAX)
        });
        let fallback = match pinned {
            Some(ms) => Fallback::Pinned(ms),
            None => Fallback::Clock {
                ms: now_ms,
                start_ms: now_ms,
                started: now,
            },
        };
        let mut bound = FutureBound {
            skew_ms,
            fallback,
            fallback_limit: 0,
        };
        bound.limit();
        bound
    }

    fn limit(&mut self) {
        let (Fallback::Clock { ms, .. } | Fallback::Pinned(ms)) = self.fallback;
        self.fallback_limit = ms.saturating_add(self.skew_ms);
    }

    /// The clock has moved on to `now`: records without a time are judged against it.
    pub fn tick(&mut self, now: Instant) {
        if let Fallback::Clock {
            ms,
            start_ms,
            started,
        } = &mut self.fallback
        {
            *ms = *start_ms + now.saturating_duration_since(*started).as_millis() as i64;
            self.limit();
        }
    }

    /// `Some` when `event_ms` is more than the bound ahead of its reference: the record's
    /// `time`, or the fallback when it has none. One comparison when it is not.
    #[inline]
    pub fn check(&self, event_ms: EventMs, time: Option<RecordTime>) -> Option<Ahead> {
        let limit = match time {
            Some(time) => time.ms().saturating_add(self.skew_ms),
            None => self.fallback_limit,
        };
        if event_ms <= limit {
            return None;
        }
        self.ahead(event_ms, time)
    }

    #[cold]
    fn ahead(&self, event_ms: EventMs, time: Option<RecordTime>) -> Option<Ahead> {
        let reference = match (time, self.fallback) {
            (Some(time), _) => Reference::Record(time),
            (None, Fallback::Clock { ms, .. }) => Reference::Clock(ms),
            (None, Fallback::Pinned(ms)) => Reference::Pinned(ms),
        };
        Some(Ahead {
            event_ms,
            reference,
            skew_ms: self.skew_ms,
        })
    }
}

#[cfg(test)]
impl FutureBound {
    /// No bound: for tests of what the bound does not decide.
    pub fn off() -> Self {
        FutureBound::new(None, Some(0), 0, Instant::now())
    }
}

/// `2026-12-07T14:28:25.000Z`; the number alone outside chrono's range.
fn utc(ms: EventMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

/// A distance in time as a reader takes it in: `90s`, `15m`, `2.5h`, `1.0d`, `27000d`.
fn span(ms: EventMs) -> String {
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    if ms < MINUTE {
        format!("{}s", ms / 1000)
    } else if ms < HOUR && ms % MINUTE == 0 {
        format!("{}m", ms / MINUTE)
    } else if ms < HOUR {
        format!("{}m {}s", ms / MINUTE, ms % MINUTE / 1000)
    } else if ms < DAY && ms % HOUR == 0 {
        format!("{}h", ms / HOUR)
    } else if ms < DAY {
        format!("{:.1}h", ms as f64 / HOUR as f64)
    } else if ms < 100 * DAY {
        format!("{:.1}d", ms as f64 / DAY as f64)
    } else {
        format!("{}d", ms / DAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const NOW: i64 = 1_765_100_000_000;

    fn bound(pinned: Option<i64>) -> (FutureBound, Instant) {
        let at = Instant::now();
        let bound = FutureBound::new(Some(Duration::from_secs(3600)), pinned, NOW, at);
        (bound, at)
    }

    #[test]
    fn an_event_up_to_the_skew_ahead_passes_and_one_beyond_is_ahead() {
        let (bound, _) = bound(None);
        assert_eq!(bound.check(NOW + HOUR, None), None);
        assert_eq!(bound.check(NOW - 365 * 24 * HOUR, None), None, "the past");
        let ahead = bound.check(NOW + HOUR + 1, None).unwrap();
        assert_eq!(ahead.reference, Reference::Clock(NOW));
        assert_eq!(bound.check(i64::MAX, None).unwrap().event_ms, i64::MAX);
        assert_eq!(
            FutureBound::new(None, None, NOW, Instant::now()).check(i64::MAX, None),
            None,
            "off"
        );
    }

    #[test]
    fn a_record_s_own_time_is_its_reference_whatever_the_clock() {
        let (bound, _) = bound(Some(NOW));
        let created = RecordTime::CreateTime(NOW - 48 * HOUR);
        let ahead = bound.check(NOW - 46 * HOUR, Some(created)).unwrap();
        assert_eq!(ahead.reference, Reference::Record(created));
        let appended = RecordTime::LogAppendTime(NOW + 48 * HOUR);
        assert_eq!(bound.check(NOW + 48 * HOUR, Some(appended)), None);
        assert_eq!(
            bound.check(NOW + 2 * HOUR, None).unwrap().reference,
            Reference::Pinned(NOW)
        );
    }

    #[test]
    fn the_clock_moves_on_at_each_tick_and_a_pinned_time_does_not() {
        let (mut clock, at) = bound(None);
        let (mut pinned, _) = bound(Some(NOW));
        // A tick every 100.9 ms for two hours: no rounding adds up.
        let tick = Duration::from_micros(100_900);
        let mut later = at;
        while later < at + Duration::from_secs(2 * 3600) {
            later += tick;
            clock.tick(later);
        }
        let behind = NOW + (later - at).as_millis() as i64 + HOUR;
        assert_eq!(clock.check(behind, None), None);
        assert!(
            clock.check(behind + 1, None).is_some(),
            "exactly the clock's time"
        );
        pinned.tick(later);
        assert_eq!(clock.check(NOW + 2 * HOUR, None), None);
        assert!(pinned.check(NOW + 2 * HOUR, None).is_some());
    }

    #[test]
    fn the_message_names_the_time_the_reference_and_where_it_came_from() {
        let (bound, _) = bound(None);
        let message = bound
            .check(4_102_444_800_000, Some(RecordTime::CreateTime(NOW)))
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            "future timestamp: 4102444800000 (2100-01-01T00:00:00.000Z) is 27052d ahead of its \
             reference time 1765100000000 (2025-12-07T09:33:20.000Z, the Kafka record's \
             CreateTime); the bound is --max-future-skew 1h"
        );
        let day = bound.check(NOW + 24 * HOUR + 1_000, None).unwrap();
        assert!(
            day.to_string()
                .contains("is 1.0d ahead of its reference time 1765100000000 (2025-12-07T09:33:20.000Z, the clock as the record was read)"),
            "{day}"
        );
        assert_eq!(span(90_000), "1m 30s");
        assert_eq!(span(5 * 60_000), "5m");
        assert_eq!(span(150 * 60_000), "2.5h");
    }
}
