//! The datasets the pipeline writes, and what each is called wherever it is named: its
//! label, its default bucket and the setting that names another. The one list of them:
//! everything per dataset (buckets, files, tables, counters) is keyed by [`Dataset`], so a
//! dataset added here is one the compiler asks about everywhere.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    Raw,
    Aggregated,
    Dlq,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [Dataset::Raw, Dataset::Aggregated, Dataset::Dlq];

    /// Its label in metrics, logs and `inspect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::Raw => "raw",
            Dataset::Aggregated => "aggregated",
            Dataset::Dlq => "dlq",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The end of its default bucket's name, `pageview-pipeline-<env>-<suffix>` (SPEC.md 2).
    pub fn bucket_suffix(self) -> &'static str {
        match self {
            Dataset::Raw => "raw-events",
            Dataset::Aggregated => "aggregated",
            Dataset::Dlq => "dlq",
        }
    }

    /// The setting (environment variable) that names its bucket instead.
    pub fn bucket_setting(self) -> &'static str {
        match self {
            Dataset::Raw => "RAW_EVENTS_BUCKET",
            Dataset::Aggregated => "AGGREGATED_BUCKET",
            Dataset::Dlq => "DLQ_BUCKET",
        }
    }
}

impl Dataset {
    /// The command-line flag of [`Dataset::bucket_setting`]: `--raw-events-bucket`.
    pub fn bucket_flag(self) -> String {
        format!(
            "--{}",
            self.bucket_setting().to_lowercase().replace('_', "-")
        )
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dataset_has_its_own_label_bucket_and_setting_and_the_setting_is_a_flag() {
        let distinct = |f: fn(Dataset) -> &'static str| {
            let mut all: Vec<_> = Dataset::ALL.map(f).to_vec();
            all.sort_unstable();
            all.dedup();
            all.len() == Dataset::ALL.len()
        };
        assert!(distinct(Dataset::as_str));
        assert!(distinct(Dataset::bucket_suffix));
        assert!(distinct(Dataset::bucket_setting));
        assert!(Dataset::ALL.iter().enumerate().all(|(i, d)| d.index() == i));
        assert_eq!(Dataset::Raw.bucket_flag(), "--raw-events-bucket");
    }
}
