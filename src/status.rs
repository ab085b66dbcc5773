//! Closed windows and counts → the live status page's view of them: the latest few windows,
//! each with its busiest postcodes, and the current throughput. The page (`GET /`, served by
//! `serve`) reads its counters from `/metrics` and these from `/api/status`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::window::ClosedWindow;

/// How many closed windows the page shows.
pub const KEPT: usize = 5;
/// How many postcodes of each window the page charts.
pub const TOP: usize = 10;

/// The page itself: self-contained (no external assets), so it works offline.
pub const PAGE: &str = include_str!("status.html");

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WindowSummary {
    pub start_ms: i64,
    pub end_ms: i64,
    /// Events counted in the window.
    pub events: i64,
    /// Postcodes with at least one event.
    pub postcodes: usize,
    /// The busiest postcodes, most events first (ties by postcode).
    pub top: Vec<PostcodeCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PostcodeCount {
    pub postcode: String,
    pub count: i64,
}

impl WindowSummary {
    pub fn of(window: &ClosedWindow) -> Self {
        let mut top: Vec<&(Box<str>, i64)> = window.counts.iter().collect();
        let by_count =
            |a: &&(Box<str>, i64), b: &&(Box<str>, i64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
        if top.len() > TOP {
            top.select_nth_unstable_by(TOP - 1, by_count);
            top.truncate(TOP);
        }
        top.sort_unstable_by(by_count);
        WindowSummary {
            start_ms: window.start,
            end_ms: window.end,
            events: window.counts.iter().map(|(_, n)| n).sum(),
            postcodes: window.counts.len(),
            top: top
                .into_iter()
                .map(|(postcode, count)| PostcodeCount {
                    postcode: postcode.to_string(),
                    count: *count,
                })
                .collect(),
        }
    }
}

/// The last [`KEPT`] windows closed, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentWindows(VecDeque<WindowSummary>);

impl RecentWindows {
    pub fn closed(&mut self, window: &ClosedWindow) {
        if self.0.len() == KEPT {
            self.0.pop_back();
        }
        self.0.push_front(WindowSummary::of(window));
    }

    pub fn latest(&self) -> impl Iterator<Item = &WindowSummary> {
        self.0.iter()
    }
}

/// The throughput is measured over at least this long. The page cannot measure it itself:
/// the counters move once a tick, and a headless browser's clock runs faster than real time.
const RATE_OVER: Duration = Duration::from_secs(1);

/// What the page is shown: written by the processing thread once a tick, read by the HTTP
/// thread.
#[derive(Debug, Default)]
pub struct Board {
    shown: Mutex<Shown>,
}

#[derive(Debug, Default)]
struct Shown {
    windows: Vec<WindowSummary>,
    records_per_second: Option<f64>,
    /// Records read and when, at the start of the current measurement.
    since: Option<(u64, Instant)>,
}

impl Board {
    /// The router has closed `recent` and read `records` by `now`.
    pub fn show(&self, recent: &RecentWindows, records: u64, now: Instant) {
        let mut shown = self.shown.lock().expect("never poisoned");
        if !shown.windows.iter().eq(recent.latest()) {
            shown.windows = recent.latest().cloned().collect();
        }
        match shown.since {
            Some((before, at)) if now.duration_since(at) >= RATE_OVER => {
                let secs = now.duration_since(at).as_secs_f64();
                shown.records_per_second = Some(records.saturating_sub(before) as f64 / secs);
                shown.since = Some((records, now));
            }
            Some(_) => {}
            None => shown.since = Some((records, now)),
        }
    }

    /// `{"records_per_second": …, "windows": [...]}`, windows newest first; the rate is null
    /// until measured.
    pub fn json(&self) -> String {
        let shown = self.shown.lock().expect("never poisoned");
        serde_json::json!({
            "records_per_second": shown.records_per_second,
            "windows": shown.windows,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_summary_has_the_busiest_postcodes_first_and_ties_by_postcode() {
        let summary =
            WindowSummary::of(&ClosedWindow::minute(0, &[("A1", 2), ("B2", 5), ("C3", 2)]));
        let top: Vec<(&str, i64)> = summary
            .top
            .iter()
            .map(|p| (p.postcode.as_str(), p.count))
            .collect();
        assert_eq!(top, [("B2", 5), ("A1", 2), ("C3", 2)]);
        assert_eq!((summary.events, summary.postcodes), (9, 3));
    }

    #[test]
    fn only_the_latest_windows_are_kept_newest_first() {
        let mut recent = RecentWindows::default();
        for i in 0..KEPT as i64 + 2 {
            recent.closed(&ClosedWindow::minute(i * 60_000, &[("A1", i + 1)]));
        }
        let starts: Vec<i64> = recent.latest().map(|w| w.start_ms).collect();
        let expected: Vec<i64> = (2..KEPT as i64 + 2).rev().map(|i| i * 60_000).collect();
        assert_eq!(starts, expected);
    }

    #[test]
    fn the_board_serves_what_it_was_shown_as_json() {
        let board = Board::default();
        assert_eq!(board.json(), r#"{"records_per_second":null,"windows":[]}"#);
        let mut recent = RecentWindows::default();
        recent.closed(&ClosedWindow::minute(60_000, &[("A1", 3)]));
        let start = Instant::now();
        board.show(&recent, 100, start);
        board.show(&recent, 150, start + RATE_OVER / 2);
        let json: serde_json::Value = serde_json::from_str(&board.json()).unwrap();
        assert_eq!(json["records_per_second"], serde_json::Value::Null);
        board.show(&recent, 400, start + 2 * RATE_OVER);
        let json: serde_json::Value = serde_json::from_str(&board.json()).unwrap();
        let rate = 300.0 / (2 * RATE_OVER).as_secs_f64();
        assert_eq!(json["records_per_second"], rate);
        assert_eq!(json["windows"][0]["start_ms"], 60_000);
        assert_eq!(json["windows"][0]["top"][0]["postcode"], "A1");
        assert_eq!(json["windows"][0]["top"][0]["count"], 3);
    }

    proptest! {
        /// The top is what sorting every count would give, cut to [`TOP`].
        #[test]
        fn the_top_is_a_full_sort_cut_short(counts in prop::collection::btree_map("[A-Z][0-9]", 1i64..50, 0..40)) {
            let counts: Vec<(&str, i64)> = counts.iter().map(|(p, n)| (p.as_str(), *n)).collect();
            let summary = WindowSummary::of(&ClosedWindow::minute(0, &counts));
            let mut sorted = counts.clone();
            sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            sorted.truncate(TOP);
            let top: Vec<(&str, i64)> = summary.top.iter().map(|p| (p.postcode.as_str(), p.count)).collect();
            prop_assert_eq!(top, sorted);
            prop_assert_eq!(summary.events, counts.iter().map(|(_, n)| n).sum::<i64>());
        }
    }
}
