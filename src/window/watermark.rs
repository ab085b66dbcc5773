//! Valid event times → how far the stream's time has got: each partition's clock, and the
//! watermark that decides which windows are final (docs/CONTRACT.md 3).
//!
//! Event times come from client clocks, and some are wrong: an event a day ahead must not
//! close the day's windows and make every honest event after it late. So a partition's clock
//! moves to a time only once [`CONFIRMING`] of its last [`RECENT`] valid events have reached
//! it, and never past the Kafka record timestamps seen with them. A lone outlier, or a run
//! of up to two, is never confirmed; a real jump (the stream moves on, a partition resumes
//! after a gap) is confirmed by the third event after it.

use crate::record::{EventMs, Partition};

/// How many of a partition's latest valid event times its clock looks at.
pub const RECENT: usize = 5;
/// How many of those must have reached a time before the clock moves to it.
pub const CONFIRMING: usize = 3;

/// One partition's clock: the highest time [`CONFIRMING`] of its last [`RECENT`] valid events
/// have reached, no higher than its highest record timestamp; it never moves back. Copy and
/// fixed-size, since it is consulted for every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventClock {
    time: Option<EventMs>,
    /// The last event times, a ring: `recent[(head + i) % RECENT]` for `i < len`, oldest first.
    recent: [EventMs; RECENT],
    head: u8,
    len: u8,
    /// The highest Kafka record timestamp among the partition's valid events; `None` for a
    /// file or stdin, whose records have none.
    record_max: Option<EventMs>,
}

/// Equal when they decide alike: wherever their rings start.
impl PartialEq for EventClock {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.recent(), self.record_max)
            == (other.time, other.recent(), other.record_max)
    }
}

impl Eq for EventClock {}

impl EventClock {
    /// A clock as a checkpoint saved it: `recent` oldest first (only the last [`RECENT`] count).
    pub fn restore(time: Option<EventMs>, recent: &[EventMs], record_max: Option<EventMs>) -> Self {
        let mut clock = EventClock {
            time,
            record_max,
            ..EventClock::default()
        };
        for &t in &recent[recent.len().saturating_sub(RECENT)..] {
            clock.push(t);
        }
        clock
    }

    /// Where the clock stands.
    pub fn time(&self) -> Option<EventMs> {
        self.time
    }

    /// The last event times, oldest first, for a checkpoint.
    pub fn recent(&self) -> Vec<EventMs> {
        (0..self.len as usize)
            .map(|i| self.recent[(self.head as usize + i) % RECENT])
            .collect()
    }

    pub fn record_max(&self) -> Option<EventMs> {
        self.record_max
    }

    /// The ring starts at 0 until it is full, so filling it needs no wrapping.
    #[inline]
    fn push(&mut self, event_ms: EventMs) {
        let len = self.len as usize;
        if len < RECENT {
            self.recent[len] = event_ms;
            self.len += 1;
        } else {
            let head = self.head as usize;
            self.recent[head] = event_ms;
            self.head = if head + 1 == RECENT {
                0
            } else {
                head as u8 + 1
            };
        }
    }

    /// A valid event, with its record's timestamp if it has one; true when the clock moved.
    #[inline]
    pub fn observe(&mut self, event_ms: EventMs, record_ms: Option<EventMs>) -> bool {
        self.push(event_ms);
        let capped_higher = record_ms > self.record_max;
        if capped_higher {
            self.record_max = record_ms;
        }
        // Removing a time and adding `event_ms` cannot lift the confirmed time above
        // `event_ms`: only a later event or a higher cap can move the clock.
        if (self.len as usize) < CONFIRMING || (Some(event_ms) <= self.time && !capped_higher) {
            return false;
        }
        self.advance(self.confirmed())
    }

    /// The partition has gone quiet: its clock may follow its latest events unconfirmed,
    /// up to its record timestamps, which a broker or producer clock vouches for. Without
    /// record timestamps (a file, stdin) it stays: nothing vouches for them. True when the
    /// clock moved.
    pub fn settle(&mut self) -> bool {
        let latest = self.recent[..self.len as usize].iter().max().copied();
        match (latest, self.record_max) {
            (Some(latest), Some(cap)) => self.advance(latest.min(cap)),
            _ => false,
        }
    }

    /// The [`CONFIRMING`]-th highest of the recent times (there are at least that many): once
    /// the ring is full, the median of five by a sorting network, since this runs for most
    /// events of an in-order stream.
    fn confirmed(&self) -> EventMs {
        let len = self.len as usize;
        if len == RECENT {
            return median_of_5(self.recent);
        }
        let mut sorted = self.recent;
        sorted[..len].sort_unstable();
        sorted[len - CONFIRMING]
    }

    fn advance(&mut self, to: EventMs) -> bool {
        let to = self.record_max.map_or(to, |cap| to.min(cap));
        if Some(to) > self.time {
            self.time = Some(to);
            true
        } else {
            false
        }
    }
}

/// The middle of five values: seven compare-exchanges (Devillard's `opt_med5`), no branches.
fn median_of_5([a, b, c, d, e]: [EventMs; 5]) -> EventMs {
    let (a, b) = (a.min(b), a.max(b));
    let (d, e) = (d.min(e), d.max(e));
    let d = a.max(d);
    let b = b.min(e);
    let (b, c) = (b.min(c), b.max(c));
    let c = c.min(d);
    b.max(c)
}

/// Each partition's watermark trails its clock ([`EventClock`]) by `bound`; the pipeline's
/// is the minimum over partitions that are not idle, or, when all are idle, the maximum, so
/// a quiet stream still closes what it has. It never moves back. A partition joins with its
/// first valid event, or before it when registered: an assigned Kafka partition that has
/// delivered nothing yet holds everything back until it proves idle, or the first partition
/// read would make every other one late.
///
/// A partition taken over from another processor can come with a floor: the watermark its
/// windows were closed under there, when that was ahead of this processor's. Its records are
/// late against the floor until this watermark passes it, so none of its windows opens again;
/// the others' backlogs are judged against this processor's own watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermarks {
    bound_ms: i64,
    partitions: Vec<Clock>,
    current: Option<i64>,
    /// (partition, floor) above `current`, dropped once `current` reaches them.
    floors: Vec<(Partition, EventMs)>,
    /// The highest floor, so that the common case (no floor at or above a window's end)
    /// costs one comparison.
    highest_floor: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clock {
    partition: Partition,
    clock: EventClock,
    idle: bool,
}

impl Watermarks {
    pub fn new(bound_ms: i64) -> Self {
        Watermarks {
            bound_ms,
            partitions: Vec::new(),
            current: None,
            floors: Vec::new(),
            highest_floor: None,
        }
    }

    /// A valid event of `partition`, with its record's timestamp if it has one; the
    /// partition is active again.
    #[inline]
    pub fn observe(&mut self, partition: Partition, event_ms: EventMs, record_ms: Option<EventMs>) {
        let i = match self
            .partitions
            .iter()
            .position(|c| c.partition == partition)
        {
            Some(i) => i,
            None => {
                self.partitions.push(Clock {
                    partition,
                    clock: EventClock::default(),
                    idle: false,
                });
                self.partitions.len() - 1
            }
        };
        let clock = &mut self.partitions[i];
        let moved = clock.clock.observe(event_ms, record_ms);
        if moved || clock.idle {
            clock.idle = false;
            self.recompute();
        }
    }

    /// `partition` belongs to this pipeline before its first event (an assigned Kafka
    /// partition): it holds the watermark back from now on, until it proves idle.
    pub fn register(&mut self, partition: Partition) {
        if !self.partitions.iter().any(|c| c.partition == partition) {
            self.partitions.push(Clock {
                partition,
                clock: EventClock::default(),
                idle: false,
            });
        }
    }

    /// `partition` delivered nothing for the idle timeout: it stops holding the watermark
    /// back, and its clock settles ([`EventClock::settle`]). True when that moved the
    /// watermark.
    pub fn set_idle(&mut self, partition: Partition) -> bool {
        let before = self.current;
        if let Some(clock) = self
            .partitions
            .iter_mut()
            .find(|c| c.partition == partition)
        {
            clock.idle = true;
            clock.clock.settle();
            self.recompute();
        }
        self.current != before
    }

    fn recompute(&mut self) {
        let of = |c: &Clock| c.clock.time().map(|t| t - self.bound_ms);
        let mut active = self.partitions.iter().filter(|c| !c.idle).peekable();
        let candidate = if active.peek().is_some() {
            // A partition with no time yet makes the minimum None: nothing is final.
            active.map(of).min().flatten()
        } else {
            self.partitions.iter().filter_map(of).max()
        };
        self.current = self.current.max(candidate);
        if self.highest_floor.is_some() && self.highest_floor <= self.current {
            self.floors.clear();
            self.highest_floor = None;
        }
    }

    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// The watermark `partition`'s windows are final up to: the current one, or its floor.
    pub fn final_to(&self, partition: Partition) -> Option<i64> {
        if self.highest_floor <= self.current {
            return self.current;
        }
        let floor = self.floors.iter().find(|(p, _)| *p == partition);
        self.current.max(floor.map(|&(_, f)| f))
    }

    /// (partition, floor) of partitions whose windows are final beyond the current watermark,
    /// for a checkpoint.
    pub fn floors(&self) -> impl Iterator<Item = (Partition, EventMs)> + '_ {
        self.floors
            .iter()
            .copied()
            .filter(|&(_, f)| Some(f) > self.current)
    }

    /// How far each partition's watermark trails its clock.
    pub fn bound_ms(&self) -> i64 {
        self.bound_ms
    }

    /// Each partition's clock that has seen an event, for a checkpoint.
    pub fn clocks(&self) -> impl Iterator<Item = (Partition, EventClock)> + '_ {
        self.partitions
            .iter()
            .filter(|c| c.clock.len > 0 || c.clock.time.is_some())
            .map(|c| (c.partition, c.clock))
    }

    /// Watermarks as checkpoints saved them: `clocks` has every partition resumed (one whose
    /// clock has no time yet holds the watermark back, as a registered one does); every
    /// partition starts active again. `floors`: see [`Watermarks`].
    pub fn restore(
        bound_ms: i64,
        current: Option<i64>,
        clocks: &[(Partition, EventClock)],
        floors: &[(Partition, EventMs)],
    ) -> Self {
        let mut w = Watermarks::new(bound_ms);
        w.partitions = clocks
            .iter()
            .map(|&(partition, clock)| Clock {
                partition,
                clock,
                idle: false,
            })
            .collect();
        w.current = current;
        w.floors = floors.to_vec();
        w.highest_floor = floors.iter().map(|&(_, f)| f).max();
        w.recompute();
        w
    }

    /// A window is final once the watermark has reached its end.
    pub fn is_final(&self, window_end: i64) -> bool {
        self.current.is_some_and(|w| w >= window_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 86_400_000;

    /// A clock fed `times` without record timestamps.
    fn fed(times: &[i64]) -> EventClock {
        let mut clock = EventClock::default();
        for &t in times {
            clock.observe(t, None);
        }
        clock
    }

    #[test]
    fn the_clock_moves_to_a_time_three_of_the_last_five_events_reached() {
        assert_eq!(fed(&[10, 20]).time(), None, "two events confirm nothing");
        assert_eq!(fed(&[10, 20, 30]).time(), Some(10));
        assert_eq!(fed(&[10, 20, 30, 40]).time(), Some(20));
        assert_eq!(fed(&[10, 20, 30, 40, 50, 60]).time(), Some(40));
        assert_eq!(fed(&[50, 40, 30, 20, 10]).time(), Some(30), "out of order");
        assert_eq!(
            fed(&[100, 10, 10, 10, 10, 10]).time(),
            Some(10),
            "never back"
        );
    }

    #[test]
    fn an_outlier_or_two_in_a_row_never_move_the_clock_and_a_real_jump_does_by_the_third() {
        let honest: Vec<i64> = (0..10).map(|i| i * 1_000).collect();
        let mut with_outliers = honest.clone();
        with_outliers.insert(5, DAY);
        with_outliers.insert(6, 2 * DAY);
        let clock = fed(&with_outliers);
        assert_eq!(clock.time(), fed(&honest).time());
        let mut jump = fed(&honest);
        jump.observe(DAY, None);
        jump.observe(DAY + 1_000, None);
        assert_eq!(
            jump.time(),
            Some(9_000),
            "the honest events they displaced confirm"
        );
        jump.observe(DAY + 2_000, None);
        assert_eq!(jump.time(), Some(DAY), "three events at the new time");
    }

    #[test]
    fn record_timestamps_cap_the_clock_and_let_a_quiet_partition_settle() {
        let mut clock = EventClock::default();
        for t in [1_000, 2_000, 3_000, 4_000] {
            clock.observe(t, Some(2_500));
        }
        assert_eq!(clock.time(), Some(2_000));
        clock.observe(5_000, Some(2_500));
        assert_eq!(clock.time(), Some(2_500), "capped");
        clock.observe(5_000, Some(10_000));
        assert_eq!(
            clock.time(),
            Some(4_000),
            "a later record time lifts the cap"
        );
        assert!(clock.settle());
        assert_eq!(
            clock.time(),
            Some(5_000),
            "quiet: the latest event, vouched for"
        );
        let mut ahead = fed(&[1_000, 2_000, 3_000]);
        ahead.observe(DAY, Some(3_500));
        assert!(ahead.settle());
        assert_eq!(ahead.time(), Some(3_500), "not past the record time");
        let mut file = fed(&[1_000, 2_000, 3_000, 4_000]);
        assert!(!file.settle(), "no record time vouches for a file's events");
    }

    #[test]
    fn a_restored_clock_decides_as_the_saved_one_would() {
        let times = [5, 1, 9, 3, 7, 2, 8, 6];
        let mut straight = EventClock::default();
        for (i, &t) in times.iter().enumerate() {
            straight.observe(t * 1_000, Some(t * 900));
            let saved =
                EventClock::restore(straight.time(), &straight.recent(), straight.record_max());
            assert_eq!(saved, straight, "after event {i}");
        }
        assert_eq!(
            straight.recent(),
            [9_000, 3_000, 7_000, 2_000, 8_000, 6_000][1..]
        );
        let older = EventClock::restore(Some(4), &[1, 2, 3, 4, 5, 6, 7], None);
        assert_eq!(older.recent(), [3, 4, 5, 6, 7], "only the last five count");
    }

    #[test]
    fn watermark_trails_the_confirmed_time() {
        let mut w = Watermarks::new(5_000);
        assert_eq!(w.current(), None);
        assert!(!w.is_final(i64::MIN));
        for t in [100_000, 90_000, 101_000] {
            w.observe(0, t, None);
        }
        assert_eq!(w.current(), Some(85_000));
        assert!(w.is_final(85_000));
        assert!(!w.is_final(85_001));
    }

    /// Feeds `partition` three events at `t`, which confirm it.
    fn at(w: &mut Watermarks, partition: Partition, t: i64) {
        for _ in 0..CONFIRMING {
            w.observe(partition, t, None);
        }
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let mut w = Watermarks::new(1_000);
        at(&mut w, 1, 50_000);
        at(&mut w, 0, 100_000);
        assert_eq!(w.current(), Some(49_000), "partition 1 is behind");
        at(&mut w, 1, 70_000);
        assert_eq!(w.current(), Some(69_000));
        assert!(w.set_idle(1), "an idle partition stops holding it back");
        assert_eq!(w.current(), Some(99_000));
        // Back from idle and still behind: the watermark does not move back.
        at(&mut w, 1, 80_000);
        assert_eq!(w.current(), Some(99_000));
        at(&mut w, 0, 200_000);
        assert_eq!(w.current(), Some(99_000), "until partition 1 catches up");
        at(&mut w, 1, 150_000);
        assert_eq!(w.current(), Some(149_000));
        assert!(!w.set_idle(0), "partition 1 still holds it");
        // All idle: everything confirmed is final.
        assert!(w.set_idle(1));
        assert_eq!(w.current(), Some(199_000));
        assert!(!w.set_idle(7), "an unknown partition changes nothing");
    }

    #[test]
    fn all_idle_closes_no_window_for_an_outlier() {
        let mut w = Watermarks::new(1_000);
        at(&mut w, 0, 100_000);
        w.observe(0, DAY, Some(100_500));
        at(&mut w, 1, 90_000);
        w.observe(1, DAY, None);
        w.set_idle(0);
        w.set_idle(1);
        assert_eq!(
            w.current(),
            Some(99_500),
            "partition 0 settles at its record time, 1 stays at its confirmed time"
        );
    }

    #[test]
    fn a_registered_partition_holds_the_watermark_before_its_first_event() {
        let mut w = Watermarks::new(1_000);
        w.register(0);
        w.register(1);
        at(&mut w, 0, 100_000);
        assert_eq!(w.current(), None, "partition 1 has delivered nothing yet");
        at(&mut w, 1, 50_000);
        assert_eq!(w.current(), Some(49_000));
        let mut w = Watermarks::new(1_000);
        w.register(1);
        at(&mut w, 0, 100_000);
        assert!(w.set_idle(1), "an empty partition that proves idle lets go");
        assert_eq!(w.current(), Some(99_000));
        w.set_idle(0);
        assert_eq!(w.current(), Some(99_000), "all idle: the largest confirmed");
    }

    /// Honest streams: event times rising by up to `step` ms with disorder below `jitter`.
    fn honest() -> impl Strategy<Value = Vec<i64>> {
        (
            proptest::collection::vec((0i64..2_000, 0i64..1_500), 0..200),
            0i64..DAY,
        )
            .prop_map(|(steps, start)| {
                let mut t = start;
                steps
                    .into_iter()
                    .map(|(step, jitter)| {
                        t += step;
                        t - jitter
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn the_median_of_five_is_the_third_highest(mut values in proptest::array::uniform5(any::<i64>())) {
            let median = median_of_5(values);
            values.sort_unstable();
            prop_assert_eq!(median, values[2]);
        }

        /// The clock trails the stream's own time by at most the span of its last few
        /// events, and an outlier (at most two of any five events) never drags it ahead.
        #[test]
        fn outliers_leave_the_clock_where_the_honest_stream_puts_it(
            stream in honest(),
            outliers in proptest::collection::vec((0usize..200, 60_000i64..100 * DAY), 0..20),
        ) {
            let mut mixed: Vec<(i64, bool)> = stream.iter().map(|&t| (t, false)).collect();
            for &(at, ahead) in &outliers {
                let at = at.min(mixed.len());
                let base = mixed[..at].iter().filter(|e| !e.1).map(|e| e.0).max().unwrap_or(0);
                let crowded = mixed[at.saturating_sub(4)..(at + 4).min(mixed.len())]
                    .iter()
                    .filter(|e| e.1)
                    .count();
                if crowded < 2 {
                    mixed.insert(at, (base + ahead, true));
                }
            }
            let mut clock = EventClock::default();
            let mut high = None;
            for &(t, outlier) in &mixed {
                clock.observe(t, None);
                if !outlier {
                    high = high.max(Some(t));
                }
                prop_assert!(clock.time() <= high, "{:?} ahead of {:?}", clock.time(), high);
            }
        }
    }
}
