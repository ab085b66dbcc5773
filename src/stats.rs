//! What the pipeline has done so far: counters for summaries and metrics, and the windows
//! closed last, for the status page.

use std::collections::VecDeque;

use crate::record::ErrorKind;
use crate::sink::{Dataset, WrittenFile};
use crate::window::ClosedWindow;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatasetStats {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    /// Records read again after a restart only to rewrite raw rows lost with open files;
    /// not in `records`, which counts each record once.
    pub replayed: u64,
    /// Valid events, late ones included: the rows of the raw dataset.
    pub valid: u64,
    /// Dead letters by [`ErrorKind::index`].
    by_kind: [u64; ErrorKind::ALL.len()],
    pub windows: u64,
    pub window_rows: u64,
    /// Published files by [`Dataset::index`].
    by_dataset: [DatasetStats; Dataset::ALL.len()],
}

impl Stats {
    pub fn dead_letter(&mut self, kind: ErrorKind) {
        self.by_kind[kind.index()] += 1;
    }

    pub fn dead_letters(&self, kind: ErrorKind) -> u64 {
        self.by_kind[kind.index()]
    }

    pub fn total_dead_letters(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    pub fn late(&self) -> u64 {
        self.dead_letters(ErrorKind::LateEvent)
    }

    pub fn file_written(&mut self, file: &WrittenFile) {
        let d = &mut self.by_dataset[file.dataset.index()];
        d.files += 1;
        d.rows += file.rows;
        d.bytes += file.bytes;
    }

    pub fn written(&self, dataset: Dataset) -> DatasetStats {
        self.by_dataset[dataset.index()]
    }

    pub fn files_written(&self) -> u64 {
        self.by_dataset.iter().map(|d| d.files).sum()
    }

    /// `invalid_json 3, late_event 1`: the dead-letter kinds seen, in spec order.
    pub fn dead_letter_breakdown(&self) -> String {
        let parts: Vec<String> = ErrorKind::ALL
            .iter()
            .filter(|k| self.dead_letters(**k) > 0)
            .map(|k| format!("{k} {}", self.dead_letters(*k)))
            .collect();
        parts.join(", ")
    }
}

/// How many closed windows the page shows.
pub const KEPT: usize = 5;
/// How many postcodes of each window the page charts.
pub const TOP: usize = 10;

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

/// The last [`KEPT`] windows closed, newest first. Kept whole and summarised when shown: a
/// sparse input closes a window every few dozen events, and summarising each as it closed
/// cost 2% of the run for a page that reads them once a second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentWindows(VecDeque<ClosedWindow>);

impl RecentWindows {
    pub fn closed(&mut self, window: ClosedWindow) {
        if self.0.len() == KEPT {
            self.0.pop_back();
        }
        self.0.push_front(window);
    }

    pub fn latest(&self) -> impl Iterator<Item = WindowSummary> + '_ {
        self.0.iter().map(WindowSummary::of)
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
            recent.closed(ClosedWindow::minute(i * 60_000, &[("A1", i + 1)]));
        }
        let starts: Vec<i64> = recent.latest().map(|w| w.start_ms).collect();
        let expected: Vec<i64> = (2..KEPT as i64 + 2).rev().map(|i| i * 60_000).collect();
        assert_eq!(starts, expected);
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
