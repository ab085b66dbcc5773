//! Valid events → counts per (tumbling event-time window, postcode), emitted once final;
//! the watermark decides which windows are final and which events are late (SPEC.md 3).
//!
//! Open windows live in a `BTreeMap` keyed by window start and are drained from the front as
//! the watermark passes their end, so a window is emitted exactly once and in time order.
//! Counts are kept per source partition until the window closes, so that a checkpoint can
//! hand each partition's share to whichever processor owns the partition next.

use crate::record::{EventMs, Partition};
use std::collections::{BTreeMap, HashMap};

/// Postcode counts of one window; foldhash because SipHash showed up in profiles.
type Counts = HashMap<Box<str>, i64, foldhash::fast::RandomState>;
/// One open window's counts per partition: a handful of partitions, so a short list.
type PartitionCounts = Vec<(i32, Counts)>;

/// Tumbling windows aligned to the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    size_ms: i64,
}

impl WindowSpec {
    /// `size_ms` must be positive; config validation guarantees it.
    pub fn new(size_ms: i64) -> Self {
        assert!(size_ms > 0, "window size must be positive");
        WindowSpec { size_ms }
    }

    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    pub fn start_of(&self, t: i64) -> i64 {
        t.div_euclid(self.size_ms) * self.size_ms
    }
}

/// Each partition's watermark trails the largest valid event time seen on it by `bound`;
/// the pipeline's is the minimum over partitions that are not idle (SPEC.md 3), or, when all
/// are idle, the maximum, so a quiet stream still closes what it has. It never moves back.
/// A partition joins with its first valid event, or before it when registered: an assigned
/// Kafka partition that has delivered nothing yet holds everything back until it proves idle,
/// or the first partition read would make every other one late.
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
    partition: i32,
    max_event_ms: Option<i64>,
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

    /// A valid event of `partition`; the partition is active again.
    pub fn observe(&mut self, partition: i32, event_ms: i64) {
        let clock = match self
            .partitions
            .iter_mut()
            .position(|c| c.partition == partition)
        {
            Some(i) => &mut self.partitions[i],
            None => {
                self.partitions.push(Clock {
                    partition,
                    max_event_ms: Some(event_ms),
                    idle: false,
                });
                return self.recompute();
            }
        };
        if clock.max_event_ms < Some(event_ms) || clock.idle {
            clock.max_event_ms = clock.max_event_ms.max(Some(event_ms));
            clock.idle = false;
            self.recompute();
        }
    }

    /// `partition` belongs to this pipeline before its first event (an assigned Kafka
    /// partition): it holds the watermark back from now on, until it proves idle.
    pub fn register(&mut self, partition: i32) {
        if !self.partitions.iter().any(|c| c.partition == partition) {
            self.partitions.push(Clock {
                partition,
                max_event_ms: None,
                idle: false,
            });
        }
    }

    /// `partition` delivered nothing for the idle timeout: it stops holding the watermark
    /// back. True when that moved the watermark.
    pub fn set_idle(&mut self, partition: i32) -> bool {
        let before = self.current;
        if let Some(clock) = self
            .partitions
            .iter_mut()
            .find(|c| c.partition == partition)
        {
            clock.idle = true;
            self.recompute();
        }
        self.current != before
    }

    fn recompute(&mut self) {
        let of = |c: &Clock| c.max_event_ms.map(|t| t - self.bound_ms);
        let mut active = self.partitions.iter().filter(|c| !c.idle).peekable();
        let candidate = if active.peek().is_some() {
            // A partition with no event yet makes the minimum None: nothing is final.
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
    pub fn final_to(&self, partition: i32) -> Option<i64> {
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

    /// How far each partition's watermark trails its largest event time.
    pub fn bound_ms(&self) -> i64 {
        self.bound_ms
    }

    /// The largest valid event time per partition, for a checkpoint.
    pub fn clocks(&self) -> impl Iterator<Item = (Partition, EventMs)> + '_ {
        self.partitions
            .iter()
            .filter_map(|c| Some((c.partition, c.max_event_ms?)))
    }

    /// Watermarks as checkpoints saved them: `clocks` has every partition resumed, with its
    /// largest event time if it had one (one without holds the watermark back, as a
    /// registered one does); every partition starts active again. `floors`: see
    /// [`Watermarks`].
    pub fn restore(
        bound_ms: i64,
        current: Option<i64>,
        clocks: &[(Partition, Option<EventMs>)],
        floors: &[(Partition, EventMs)],
    ) -> Self {
        let mut w = Watermarks::new(bound_ms);
        w.partitions = clocks
            .iter()
            .map(|&(partition, max_event_ms)| Clock {
                partition,
                max_event_ms,
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

/// Where a valid event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    OnTime,
    /// Its window `[window_start, window_start + size)` was already final at `watermark`.
    Late {
        window_start: i64,
        watermark: i64,
    },
}

/// One final window: its counts per postcode, sorted by postcode so output is deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedWindow {
    pub start: i64,
    pub end: i64,
    pub counts: Vec<(Box<str>, i64)>,
}

#[cfg(test)]
impl ClosedWindow {
    /// A one-minute window from `start` with `counts`, for tests of what consumes windows.
    pub fn minute(start: i64, counts: &[(&str, i64)]) -> Self {
        ClosedWindow {
            start,
            end: start + 60_000,
            counts: counts.iter().map(|(p, n)| ((*p).into(), *n)).collect(),
        }
    }
}

/// The window operator: assignment, lateness and emission in one place.
#[derive(Debug)]
pub struct Windows {
    spec: WindowSpec,
    watermark: Watermarks,
    open: BTreeMap<i64, PartitionCounts>,
}

/// One partition's count of one postcode in one open window: the unit a checkpoint saves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenCount {
    pub window_start: i64,
    pub partition: i32,
    pub postcode: Box<str>,
    pub count: i64,
}

impl Windows {
    pub fn new(spec: WindowSpec, watermark_bound_ms: i64) -> Self {
        Windows {
            spec,
            watermark: Watermarks::new(watermark_bound_ms),
            open: BTreeMap::new(),
        }
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    pub fn watermark(&self) -> Option<i64> {
        self.watermark.current()
    }

    pub fn watermarks(&self) -> &Watermarks {
        &self.watermark
    }

    /// The operator as a checkpoint left it.
    pub fn restore(spec: WindowSpec, watermark: Watermarks, counts: &[OpenCount]) -> Self {
        let mut windows = Windows {
            spec,
            watermark,
            open: BTreeMap::new(),
        };
        for c in counts {
            *windows
                .partition_counts(c.window_start, c.partition)
                .entry(c.postcode.clone())
                .or_default() += c.count;
        }
        windows
    }

    /// Every open count, for a checkpoint.
    pub fn open_counts(&self) -> Vec<OpenCount> {
        let mut all = Vec::new();
        for (&window_start, partitions) in &self.open {
            for (partition, counts) in partitions {
                for (postcode, &count) in counts {
                    all.push(OpenCount {
                        window_start,
                        partition: *partition,
                        postcode: postcode.clone(),
                        count,
                    });
                }
            }
        }
        all.sort_unstable_by(|a, b| {
            (a.window_start, a.partition, &a.postcode).cmp(&(
                b.window_start,
                b.partition,
                &b.postcode,
            ))
        });
        all
    }

    fn partition_counts(&mut self, window_start: i64, partition: i32) -> &mut Counts {
        let partitions = self.open.entry(window_start).or_default();
        let i = match partitions.iter().position(|(p, _)| *p == partition) {
            Some(i) => i,
            None => {
                partitions.push((partition, Counts::default()));
                partitions.len() - 1
            }
        };
        &mut partitions[i].1
    }

    /// Counts an on-time event of `partition` in its window, or says it is late; then moves
    /// the watermark.
    pub fn add(&mut self, partition: i32, event_ms: i64, postcode: &str) -> Assignment {
        let window_start = self.spec.start_of(event_ms);
        if let Some(watermark) = self.watermark.final_to(partition)
            && watermark >= window_start + self.spec.size_ms
        {
            return Assignment::Late {
                window_start,
                watermark,
            };
        }
        let counts = self.partition_counts(window_start, partition);
        match counts.get_mut(postcode) {
            Some(n) => *n += 1,
            None => {
                counts.insert(postcode.into(), 1);
            }
        }
        self.watermark.observe(partition, event_ms);
        Assignment::OnTime
    }

    /// See [`Watermarks::register`].
    pub fn register(&mut self, partition: i32) {
        self.watermark.register(partition);
    }

    /// `partition` has gone quiet; true when that moved the watermark (windows may be final).
    pub fn set_idle(&mut self, partition: i32) -> bool {
        self.watermark.set_idle(partition)
    }

    /// True when at least one open window is final: a cheap check for the hot loop.
    pub fn has_final(&self) -> bool {
        self.open
            .first_key_value()
            .is_some_and(|(&start, _)| self.watermark.is_final(start + self.spec.size_ms))
    }

    /// Removes and returns every window the watermark has made final, oldest first.
    pub fn drain_final(&mut self) -> Vec<ClosedWindow> {
        let mut closed = Vec::new();
        while self.has_final() {
            let (start, counts) = self.open.pop_first().expect("has_final saw a window");
            closed.push(self.close(start, counts));
        }
        closed
    }

    /// Removes and returns every open window: the input has ended, so all are final.
    pub fn drain_all(&mut self) -> Vec<ClosedWindow> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(start, counts)| self.close(start, counts))
            .collect()
    }

    fn close(&self, start: i64, partitions: PartitionCounts) -> ClosedWindow {
        let mut partitions = partitions.into_iter().map(|(_, counts)| counts);
        let mut total = partitions.next().unwrap_or_default();
        for counts in partitions {
            for (postcode, n) in counts {
                *total.entry(postcode).or_default() += n;
            }
        }
        let mut counts: Vec<_> = total.into_iter().collect();
        counts.sort_unstable();
        ClosedWindow {
            start,
            end: start + self.spec.size_ms,
            counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;

    #[test]
    fn windows_align_to_the_epoch() {
        let spec = WindowSpec::new(MIN);
        assert_eq!(spec.start_of(0), 0);
        assert_eq!(spec.start_of(59_999), 0);
        assert_eq!(spec.start_of(60_000), 60_000);
        assert_eq!(spec.start_of(1_700_000_000_123), 1_699_999_980_000);
        assert_eq!(spec.start_of(-1), -60_000);
    }

    #[test]
    fn watermark_trails_the_largest_event_time() {
        let mut w = Watermarks::new(5_000);
        assert_eq!(w.current(), None);
        assert!(!w.is_final(i64::MIN));
        w.observe(0, 100_000);
        w.observe(0, 90_000);
        assert_eq!(w.current(), Some(95_000));
        assert!(w.is_final(95_000));
        assert!(!w.is_final(95_001));
    }

    #[test]
    fn a_window_closes_exactly_when_the_watermark_reaches_its_end() {
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        assert_eq!(ws.add(0, 10_000, "SW19"), Assignment::OnTime);
        assert_eq!(ws.add(0, 64_999, "E1"), Assignment::OnTime);
        assert!(ws.drain_final().is_empty(), "W = 59_999 < 60_000");
        assert_eq!(ws.add(0, 65_000, "E1"), Assignment::OnTime);
        let closed = ws.drain_final();
        assert_eq!(
            closed,
            vec![ClosedWindow {
                start: 0,
                end: MIN,
                counts: vec![("SW19".into(), 1)],
            }]
        );
        assert_eq!(
            ws.drain_all().len(),
            1,
            "the window of 64_999 and 65_000 stays open"
        );
    }

    #[test]
    fn an_event_for_a_final_window_is_late_and_not_counted() {
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        ws.add(0, 59_000, "SW19");
        ws.add(0, 65_000, "SW19");
        assert_eq!(ws.drain_final().len(), 1);
        assert_eq!(
            ws.add(0, 59_999, "SW19"),
            Assignment::Late {
                window_start: 0,
                watermark: 60_000
            }
        );
        // Out of order but within the bound: still on time.
        assert_eq!(ws.add(0, 60_000, "SW19"), Assignment::OnTime);
        // A window that never opened is final too once the watermark passed it.
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        ws.add(0, 600_000, "E1");
        assert!(matches!(ws.add(0, 1_000, "E1"), Assignment::Late { .. }));
        let all = ws.drain_all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].counts, vec![("E1".into(), 1)]);
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let mut w = Watermarks::new(1_000);
        w.observe(1, 50_000);
        w.observe(0, 100_000);
        assert_eq!(w.current(), Some(49_000), "partition 1 is behind");
        w.observe(1, 70_000);
        assert_eq!(w.current(), Some(69_000));
        assert!(w.set_idle(1), "an idle partition stops holding it back");
        assert_eq!(w.current(), Some(99_000));
        // Back from idle and still behind: the watermark does not move back.
        w.observe(1, 80_000);
        assert_eq!(w.current(), Some(99_000));
        w.observe(0, 200_000);
        assert_eq!(w.current(), Some(99_000), "until partition 1 catches up");
        w.observe(1, 150_000);
        assert_eq!(w.current(), Some(149_000));
        assert!(!w.set_idle(0), "partition 1 still holds it");
        // All idle: everything seen is final.
        assert!(w.set_idle(1));
        assert_eq!(w.current(), Some(199_000));
        assert!(!w.set_idle(7), "an unknown partition changes nothing");
    }

    #[test]
    fn a_registered_partition_holds_the_watermark_before_its_first_event() {
        let mut w = Watermarks::new(1_000);
        w.register(0);
        w.register(1);
        w.observe(0, 100_000);
        assert_eq!(w.current(), None, "partition 1 has delivered nothing yet");
        w.observe(1, 50_000);
        assert_eq!(w.current(), Some(49_000));
        let mut w = Watermarks::new(1_000);
        w.register(1);
        w.observe(0, 100_000);
        assert!(w.set_idle(1), "an empty partition that proves idle lets go");
        assert_eq!(w.current(), Some(99_000));
        w.set_idle(0);
        assert_eq!(w.current(), Some(99_000), "all idle: the largest seen");
    }

    #[test]
    fn an_idle_partition_lets_windows_close() {
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        ws.add(1, 10_000, "E1");
        ws.add(0, 200_000, "E1");
        assert!(
            ws.drain_final().is_empty(),
            "partition 1 holds the watermark at 5_000"
        );
        assert!(ws.set_idle(1));
        let closed = ws.drain_final();
        assert_eq!(
            closed.len(),
            1,
            "window 0 closed, window 180_000 still open"
        );
        assert_eq!(closed[0].start, 0);
        assert!(matches!(ws.add(1, 20_000, "E1"), Assignment::Late { .. }));
    }

    #[test]
    fn a_restored_operator_carries_on_as_if_never_stopped() {
        let events = [
            (0, 10_000, "E1"),
            (1, 20_000, "E1"),
            (1, 70_000, "SW19"),
            (0, 80_000, "E1"),
            (2, 30_000, "B1"),
        ];
        let mut straight = Windows::new(WindowSpec::new(MIN), 5_000);
        let mut resumed = Windows::new(WindowSpec::new(MIN), 5_000);
        for (i, &(p, t, postcode)) in events.iter().enumerate() {
            straight.add(p, t, postcode);
            resumed.add(p, t, postcode);
            let clocks: Vec<_> = resumed
                .watermarks()
                .clocks()
                .map(|(p, t)| (p, Some(t)))
                .collect();
            let watermark = Watermarks::restore(5_000, resumed.watermark(), &clocks, &[]);
            resumed = Windows::restore(WindowSpec::new(MIN), watermark, &resumed.open_counts());
            assert_eq!(resumed.watermark(), straight.watermark(), "after event {i}");
        }
        assert_eq!(resumed.open_counts(), straight.open_counts());
        assert_eq!(resumed.drain_all(), straight.drain_all());
    }

    #[test]
    fn a_partition_taken_over_stays_final_to_its_floor_while_another_catches_up() {
        // Partition 0 comes from a processor whose watermark was at 200_000, partition 1
        // from one at 50_000.
        let watermark = Watermarks::restore(
            5_000,
            Some(50_000),
            &[(0, Some(205_000)), (1, Some(55_000))],
            &[(0, 200_000)],
        );
        let mut ws = Windows::restore(WindowSpec::new(MIN), watermark, &[]);
        assert_eq!(ws.watermark(), Some(50_000));
        assert_eq!(ws.add(1, 70_000, "E1"), Assignment::OnTime, "1's backlog");
        assert_eq!(
            ws.add(0, 70_000, "E1"),
            Assignment::Late {
                window_start: 60_000,
                watermark: 200_000
            },
            "0's window 60_000 was final where it came from"
        );
        assert_eq!(ws.add(0, 201_000, "E1"), Assignment::OnTime);
        assert_eq!(ws.watermarks().floors().collect::<Vec<_>>(), [(0, 200_000)]);
        ws.add(1, 300_000, "E1");
        assert_eq!(ws.watermark(), Some(200_000));
        assert_eq!(
            ws.watermarks().floors().count(),
            0,
            "passed: nothing left to save"
        );
    }

    #[test]
    fn a_window_sums_its_partitions() {
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        ws.add(0, 1_000, "E1");
        ws.add(1, 2_000, "E1");
        ws.add(1, 3_000, "B1");
        assert_eq!(ws.open_counts().len(), 3);
        let all = ws.drain_all();
        assert_eq!(all[0].counts, vec![("B1".into(), 1), ("E1".into(), 2)]);
    }

    fn naive(events: &[(i64, u8)], bound: i64) -> (BTreeMap<(i64, String), i64>, usize) {
        let mut counts = BTreeMap::new();
        let mut late = 0;
        let mut max: Option<i64> = None;
        for &(t, p) in events {
            let start = t.div_euclid(MIN) * MIN;
            if max.is_some_and(|m| m - bound >= start + MIN) {
                late += 1;
                continue;
            }
            *counts.entry((start, format!("P{p}"))).or_insert(0) += 1;
            max = Some(max.map_or(t, |m| m.max(t)));
        }
        (counts, late)
    }

    fn run(events: &[(i64, u8)], bound: i64) -> (BTreeMap<(i64, String), i64>, usize, Vec<i64>) {
        let mut ws = Windows::new(WindowSpec::new(MIN), bound);
        let mut counts = BTreeMap::new();
        let mut late = 0;
        let mut order = Vec::new();
        let mut take = |closed: Vec<ClosedWindow>| {
            for w in closed {
                order.push(w.start);
                for (p, n) in w.counts {
                    assert!(counts.insert((w.start, p.to_string()), n).is_none());
                }
            }
        };
        for &(t, p) in events {
            if let Assignment::Late { .. } = ws.add(0, t, &format!("P{p}")) {
                late += 1;
            }
            take(ws.drain_final());
        }
        take(ws.drain_all());
        (counts, late, order)
    }

    proptest! {
        #[test]
        fn matches_a_naive_group_by(events in proptest::collection::vec((0i64..1_000_000, 0u8..4), 0..300),
                                    bound in 0i64..20_000) {
            let (counts, late, order) = run(&events, bound);
            let (want, want_late) = naive(&events, bound);
            prop_assert_eq!(counts, want);
            prop_assert_eq!(late, want_late);
            prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "each window once, in order");
        }

        #[test]
        fn disorder_within_the_bound_changes_nothing(
            base in proptest::collection::vec((0i64..600_000, 0u8..4), 0..300),
            jitter in proptest::collection::vec(0i64..5_000, 300),
        ) {
            let mut sorted = base.clone();
            sorted.sort();
            let shuffled: Vec<_> = sorted
                .iter()
                .zip(&jitter)
                .map(|(&(t, p), &j)| (t, p, t + j))
                .collect::<Vec<_>>();
            // Arrival order = event time plus a delay below the bound.
            let mut arrival = shuffled.clone();
            arrival.sort_by_key(|&(_, _, at)| at);
            let arrival: Vec<_> = arrival.iter().map(|&(t, p, _)| (t, p)).collect();
            let (in_order, late_sorted, _) = run(&sorted, 5_000);
            let (disordered, late_arrival, _) = run(&arrival, 5_000);
            prop_assert_eq!(late_sorted, 0);
            prop_assert_eq!(late_arrival, 0);
            prop_assert_eq!(in_order, disordered);
        }
    }
}
