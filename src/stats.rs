//! What the pipeline has done so far: counters for summaries (and, later, metrics).

use crate::sink::{Dataset, WrittenFile};
use crate::validate::ErrorKind;

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
