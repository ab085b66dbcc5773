//! Valid events → counts per (tumbling event-time window, postcode), emitted once final;
//! the watermark decides which windows are final and which events are late (SPEC.md 3).
//!
//! Open windows live in a `BTreeMap` keyed by window start and are drained from the front as
//! the watermark passes their end, so a window is emitted exactly once and in time order.
//! Counts are kept per source partition until the window closes, so that a checkpoint can
//! hand each partition's share to whichever processor owns the partition next.

use crate::record::{EventMs, Partition};
use std::collections::{BTreeMap, HashMap};

mod watermark;
pub use watermark::{CONFIRMING, EventClock, Watermarks};

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
    /// Postcodes the last closed window counted: a new window's counts start that large
    /// rather than growing through their first events (sparse input opens a window every
    /// few dozen events).
    postcodes: usize,
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
            postcodes: 0,
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
            postcodes: 0,
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
        let postcodes = self.postcodes;
        let partitions = self.open.entry(window_start).or_default();
        let i = match partitions.iter().position(|(p, _)| *p == partition) {
            Some(i) => i,
            None => {
                let counts = Counts::with_capacity_and_hasher(postcodes, Default::default());
                partitions.push((partition, counts));
                partitions.len() - 1
            }
        };
        &mut partitions[i].1
    }

    /// Counts an on-time event of `partition` in its window, or says it is late; then moves
    /// the watermark. `record_ms`: the timestamp of the event's Kafka record, if it has one.
    /// A late event still counts among the partition's recent events: left out, a run of
    /// late events would crowd the outliers around it together in the clock's view.
    pub fn add(
        &mut self,
        partition: Partition,
        event_ms: EventMs,
        record_ms: Option<EventMs>,
        postcode: &str,
    ) -> Assignment {
        let window_start = self.spec.start_of(event_ms);
        if let Some(watermark) = self.watermark.final_to(partition)
            && watermark >= window_start + self.spec.size_ms
        {
            self.watermark.observe(partition, event_ms, record_ms);
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
        self.watermark.observe(partition, event_ms, record_ms);
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

    fn close(&mut self, start: i64, partitions: PartitionCounts) -> ClosedWindow {
        let mut partitions = partitions.into_iter().map(|(_, counts)| counts);
        let mut total = partitions.next().unwrap_or_default();
        for counts in partitions {
            for (postcode, n) in counts {
                *total.entry(postcode).or_default() += n;
            }
        }
        self.postcodes = total.len();
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
    use super::watermark::RECENT;
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

    /// Adds events of partition 0 without record times.
    fn add_all(ws: &mut Windows, events: &[(i64, &str)]) -> Vec<Assignment> {
        events
            .iter()
            .map(|&(t, postcode)| ws.add(0, t, None, postcode))
            .collect()
    }

    #[test]
    fn a_window_closes_exactly_when_the_watermark_reaches_its_end() {
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        add_all(&mut ws, &[(10_000, "SW19"), (64_999, "E1"), (64_999, "E1")]);
        assert!(ws.drain_final().is_empty(), "W = 59_999 < 60_000");
        add_all(&mut ws, &[(65_000, "E1"), (65_000, "E1")]);
        assert!(
            ws.drain_final().is_empty(),
            "two events at 65_000 confirm nothing"
        );
        add_all(&mut ws, &[(65_000, "E1")]);
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
        add_all(
            &mut ws,
            &[(59_000, "SW19"), (65_000, "SW19"), (65_000, "SW19")],
        );
        add_all(&mut ws, &[(65_000, "SW19")]);
        assert_eq!(ws.drain_final().len(), 1);
        assert_eq!(
            ws.add(0, 59_999, None, "SW19"),
            Assignment::Late {
                window_start: 0,
                watermark: 60_000
            }
        );
        // Out of order but within the bound: still on time.
        assert_eq!(ws.add(0, 60_000, None, "SW19"), Assignment::OnTime);
        // A window that never opened is final too once the watermark passed it.
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        add_all(&mut ws, &[(600_000, "E1"); CONFIRMING]);
        assert!(matches!(
            ws.add(0, 1_000, None, "E1"),
            Assignment::Late { .. }
        ));
        let all = ws.drain_all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].counts, vec![("E1".into(), CONFIRMING as i64)]);
    }

    #[test]
    fn an_event_a_day_ahead_is_counted_in_its_own_window_and_closes_none() {
        let day = 24 * 60 * MIN;
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        let mut late = 0;
        for i in 0..600 {
            let t = i * 1_000;
            if i == 60 {
                ws.add(0, day, None, "E1");
            }
            late += matches!(ws.add(0, t, None, "E1"), Assignment::Late { .. }) as usize;
            assert!(ws.drain_final().iter().all(|w| w.end < day));
        }
        assert_eq!(late, 0);
        let last = ws.drain_all().pop().unwrap();
        assert_eq!((last.start, last.counts), (day, vec![("E1".into(), 1)]));
    }

    #[test]
    fn an_idle_partition_lets_windows_close() {
        let mut ws = Windows::new(WindowSpec::new(MIN), 5_000);
        for _ in 0..CONFIRMING {
            ws.add(1, 10_000, Some(10_000), "E1");
            ws.add(0, 200_000, Some(200_000), "E1");
        }
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
        assert!(matches!(
            ws.add(1, 20_000, None, "E1"),
            Assignment::Late { .. }
        ));
    }

    #[test]
    fn a_restored_operator_carries_on_as_if_never_stopped() {
        let events = [
            (0, 10_000, "E1"),
            (1, 20_000, "E1"),
            (1, 70_000, "SW19"),
            (0, 80_000, "E1"),
            (2, 30_000, "B1"),
            (2, 31_000, "B1"),
            (2, 32_000, "B1"),
            (0, 81_000, "E1"),
            (0, 82_000, "E1"),
            (1, 71_000, "SW19"),
            (1, 72_000, "SW19"),
        ];
        let mut straight = Windows::new(WindowSpec::new(MIN), 5_000);
        let mut resumed = Windows::new(WindowSpec::new(MIN), 5_000);
        for (i, &(p, t, postcode)) in events.iter().enumerate() {
            let record = Some(t + 500);
            straight.add(p, t, record, postcode);
            resumed.add(p, t, record, postcode);
            let clocks: Vec<_> = resumed
                .watermarks()
                .clocks()
                .map(|(p, c)| {
                    (
                        p,
                        EventClock::restore(c.time(), &c.recent(), c.record_max()),
                    )
                })
                .collect();
            let watermark = Watermarks::restore(5_000, resumed.watermark(), &clocks, &[]);
            resumed = Windows::restore(WindowSpec::new(MIN), watermark, &resumed.open_counts());
            assert_eq!(resumed.watermark(), straight.watermark(), "after event {i}");
        }
        assert!(straight.watermark().is_some());
        assert_eq!(resumed.open_counts(), straight.open_counts());
        assert_eq!(resumed.drain_all(), straight.drain_all());
    }

    #[test]
    fn a_partition_taken_over_stays_final_to_its_floor_while_another_catches_up() {
        // Partition 0 comes from a processor whose watermark was at 200_000, partition 1
        // from one at 50_000.
        let clock = |t| EventClock::restore(Some(t), &[], None);
        let watermark = Watermarks::restore(
            5_000,
            Some(50_000),
            &[(0, clock(205_000)), (1, clock(55_000))],
            &[(0, 200_000)],
        );
        let mut ws = Windows::restore(WindowSpec::new(MIN), watermark, &[]);
        assert_eq!(ws.watermark(), Some(50_000));
        assert_eq!(
            ws.add(1, 70_000, None, "E1"),
            Assignment::OnTime,
            "1's backlog"
        );
        assert_eq!(
            ws.add(0, 70_000, None, "E1"),
            Assignment::Late {
                window_start: 60_000,
                watermark: 200_000
            },
            "0's window 60_000 was final where it came from"
        );
        assert_eq!(ws.add(0, 201_000, None, "E1"), Assignment::OnTime);
        assert_eq!(ws.watermarks().floors().collect::<Vec<_>>(), [(0, 200_000)]);
        for _ in 0..CONFIRMING {
            ws.add(1, 300_000, None, "E1");
        }
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
        ws.add(0, 1_000, None, "E1");
        ws.add(1, 2_000, None, "E1");
        ws.add(1, 3_000, None, "B1");
        assert_eq!(ws.open_counts().len(), 3);
        let all = ws.drain_all();
        assert_eq!(all[0].counts, vec![("B1".into(), 1), ("E1".into(), 2)]);
    }

    /// A group-by that judges lateness with the clock rule written out plainly: the
    /// `CONFIRMING`-th highest of the last `RECENT` times, never moving back.
    /// Counts per (window start, postcode).
    type Grouped = BTreeMap<(i64, String), i64>;

    fn naive(events: &[(i64, u8)], bound: i64) -> (Grouped, Vec<usize>) {
        let mut counts = BTreeMap::new();
        let mut late = Vec::new();
        let mut seen: Vec<i64> = Vec::new();
        let mut clock: Option<i64> = None;
        for (i, &(t, p)) in events.iter().enumerate() {
            let start = t.div_euclid(MIN) * MIN;
            seen.push(t);
            if clock.is_some_and(|c| c - bound >= start + MIN) {
                late.push(i);
                continue;
            }
            *counts.entry((start, format!("P{p}"))).or_insert(0) += 1;
            let mut recent = seen[seen.len().saturating_sub(RECENT)..].to_vec();
            recent.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(&confirmed) = recent.get(CONFIRMING - 1) {
                clock = clock.max(Some(confirmed));
            }
        }
        (counts, late)
    }

    fn run(events: &[(i64, u8)], bound: i64) -> (Grouped, Vec<usize>, Vec<i64>) {
        let mut ws = Windows::new(WindowSpec::new(MIN), bound);
        let mut counts = BTreeMap::new();
        let mut late = Vec::new();
        let mut order = Vec::new();
        let mut take = |closed: Vec<ClosedWindow>| {
            for w in closed {
                order.push(w.start);
                for (p, n) in w.counts {
                    assert!(counts.insert((w.start, p.to_string()), n).is_none());
                }
            }
        };
        for (i, &(t, p)) in events.iter().enumerate() {
            if let Assignment::Late { .. } = ws.add(0, t, None, &format!("P{p}")) {
                late.push(i);
            }
            take(ws.drain_final());
        }
        take(ws.drain_all());
        (counts, late, order)
    }

    /// Honest streams: times rising by up to 2 s with disorder below 1.5 s, and after the
    /// first few (before which nothing is confirmed, so an outlier confirms a time earlier)
    /// now and then an event back-dated 10 minutes, which may be late.
    fn honest() -> impl Strategy<Value = Vec<(i64, u8)>> {
        proptest::collection::vec((0i64..2_000, 0i64..1_500, 0u8..4, 0u8..40), 0..300).prop_map(
            |steps| {
                let mut t = 1_700_000_000_000;
                steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (step, jitter, p, back))| {
                        t += step;
                        let late = if back == 0 && i >= RECENT {
                            10 * MIN
                        } else {
                            0
                        };
                        (t - jitter - late, p)
                    })
                    .collect()
            },
        )
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

        /// Outliers (never three of any five events) change no honest event's fate, and each
        /// is counted in its own window.
        #[test]
        fn outliers_make_no_honest_event_late(
            stream in honest(),
            outliers in proptest::collection::vec((0usize..300, MIN..30 * 24 * 60 * MIN), 0..30),
        ) {
            let mut mixed: Vec<(i64, u8, Option<usize>)> =
                stream.iter().enumerate().map(|(i, &(t, p))| (t, p, Some(i))).collect();
            for &(at, ahead) in &outliers {
                let at = at.min(mixed.len());
                let near = &mixed[at.saturating_sub(RECENT - 1)..(at + RECENT - 1).min(mixed.len())];
                if near.iter().filter(|e| e.2.is_none()).count() < CONFIRMING - 1 {
                    let base = mixed[..at].iter().map(|e| e.0).max().unwrap_or(1_700_000_000_000);
                    mixed.insert(at, (base + ahead, 9, None));
                }
            }
            let events: Vec<(i64, u8)> = mixed.iter().map(|e| (e.0, e.1)).collect();
            let (counts, late, _) = run(&events, 5_000);
            let (_, honest_late, _) = run(&stream, 5_000);
            let late_honest: Vec<usize> = late.iter().map(|&i| mixed[i].2.expect("no outlier is late")).collect();
            prop_assert_eq!(late_honest, honest_late);
            let mut want = Grouped::new();
            for (i, e) in events.iter().enumerate() {
                if !late.contains(&i) {
                    *want.entry((e.0.div_euclid(MIN) * MIN, format!("P{}", e.1))).or_default() += 1;
                }
            }
            prop_assert_eq!(counts, want);
        }
    }
}
