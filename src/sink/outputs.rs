//! The three datasets together: what the router writes to, and what it gets back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::basic::Compression;
use parquet::errors::ParquetError;

use arrow_schema::SchemaRef;

use super::aggregated::{AggregatedRows, AggregatedSink};
use super::dlq::{DeadLetter, DlqRows, DlqSink};
use super::naming;
use super::raw::{RawRows, RawSink};
use super::rolling::{FileSettings, RowBuffer};
pub use crate::dataset::Dataset;
use crate::record::{Offset, Partition};
use crate::storage::{Buckets, PendingFile, Storage, StorageError, Unsynced, synced};
use crate::validate::Pageview;
use crate::window::ClosedWindow;
use crate::workers::Workers;

/// What each dataset's files hold.
impl Dataset {
    /// The columns of this dataset's files.
    pub fn schema(self) -> SchemaRef {
        match self {
            Dataset::Raw => RawRows::schema(),
            Dataset::Aggregated => AggregatedRows::schema(),
            Dataset::Dlq => DlqRows::schema(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot encode a {dataset} Parquet file: {source}")]
    Encode {
        dataset: Dataset,
        source: ParquetError,
    },
}

/// A file that is now visible to readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub dataset: Dataset,
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
}

/// A complete file that readers cannot see yet: a file run publishes it at once, a Kafka
/// run names it in a checkpoint manifest first.
pub struct Finished {
    pub file: Box<dyn PendingFile>,
    pub dataset: Dataset,
    pub key: String,
    pub rows: u64,
    /// The source partition of a raw or DLQ file's rows.
    pub partition: i32,
    /// The event hour of a raw file's rows.
    pub hour: i64,
    /// The position of the last row in it.
    pub last: i64,
}

impl Finished {
    pub fn publish(self) -> Result<WrittenFile, StorageError> {
        synced(self.publish_unsynced()?)
    }

    /// See [`PendingFile::publish_unsynced`].
    pub fn publish_unsynced(self) -> Result<(WrittenFile, Option<Unsynced>), StorageError> {
        let (bytes, unsynced) = self.file.publish_unsynced(&self.key)?;
        let written = WrittenFile {
            dataset: self.dataset,
            key: self.key,
            rows: self.rows,
            bytes,
        };
        Ok((written, unsynced))
    }
}

/// How file names label the input, so two inputs never write the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tags {
    /// One label for every file: an input file's name, an embedded run.
    Fixed(String),
    /// `<topic>.p<N>` for a partition's raw and DLQ files; aggregated files, which sum
    /// partitions, name every partition the processor owns (`<topic>.p0_1_2`).
    Topic { topic: String, partitions: Vec<i32> },
}

impl Tags {
    pub fn partition(&self, partition: i32) -> String {
        match self {
            Tags::Fixed(tag) => tag.clone(),
            Tags::Topic { topic, .. } => naming::source_tag(&format!("{topic}.p{partition}")),
        }
    }

    pub fn all(&self) -> String {
        match self {
            Tags::Fixed(tag) => tag.clone(),
            Tags::Topic { topic, partitions } => {
                let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
                naming::source_tag(&format!("{topic}.p{}", list.join("_")))
            }
        }
    }
}

/// How files are named and when they roll.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub buckets: Buckets,
    pub tags: Tags,
    pub max_file_bytes: u64,
    pub max_file_age: Duration,
    pub compression: Compression,
    /// Where closed windows go when they are one group member's partial counts, to be
    /// merged with the other members' (`commit::Merger`); `None`: into the aggregated
    /// dataset, final.
    pub partials: Option<String>,
    /// Where files are encoded.
    pub workers: Workers,
}

pub struct Sinks {
    raw: RawSink,
    aggregated: AggregatedSink,
    dlq: DlqSink,
    finished: Vec<Finished>,
}

impl Sinks {
    pub fn new(storage: Arc<dyn Storage>, config: &SinkConfig) -> Self {
        let settings = |dataset, bucket: &str| FileSettings {
            dataset,
            bucket: bucket.to_string(),
            storage: storage.clone(),
            tags: config.tags.clone(),
            max_bytes: config.max_file_bytes,
            max_age: config.max_file_age,
            compression: config.compression,
            workers: config.workers.clone(),
        };
        Sinks {
            raw: RawSink::new(settings(Dataset::Raw, config.buckets.of(Dataset::Raw))),
            aggregated: AggregatedSink::new(settings(
                Dataset::Aggregated,
                config
                    .partials
                    .as_deref()
                    .unwrap_or(config.buckets.of(Dataset::Aggregated)),
            )),
            dlq: DlqSink::new(settings(Dataset::Dlq, config.buckets.of(Dataset::Dlq))),
            finished: Vec::new(),
        }
    }

    pub fn raw(
        &mut self,
        event: &Pageview<'_>,
        partition: i32,
        position: i64,
    ) -> Result<(), SinkError> {
        self.raw
            .push(event, partition, position, &mut self.finished)
    }

    pub fn dead_letter(&mut self, letter: &DeadLetter<'_>) -> Result<(), SinkError> {
        self.dlq.push(letter, &mut self.finished)
    }

    pub fn window(&mut self, window: &ClosedWindow) -> Result<(), SinkError> {
        self.aggregated.push(window, &mut self.finished)
    }

    /// Finishes every file that has been open longer than the age limit.
    pub fn finish_due(&mut self, now: Instant) -> Result<(), SinkError> {
        self.raw.finish_due(now, &mut self.finished)?;
        self.aggregated.finish_due(now, &mut self.finished)?;
        self.dlq.finish_due(now, &mut self.finished)
    }

    /// Finishes the files whose rows a checkpoint cannot leave open: final windows and dead
    /// letters, which depend on the order records arrived in and so cannot be replayed.
    pub fn finish_ordered(&mut self) -> Result<(), SinkError> {
        self.aggregated.finish_all(&mut self.finished)?;
        self.dlq.finish_all(&mut self.finished)
    }

    /// Finishes everything buffered: the input has ended or the process is stopping.
    pub fn finish_all(&mut self) -> Result<(), SinkError> {
        self.raw.finish_all(&mut self.finished)?;
        self.finish_ordered()
    }

    /// A run that dead-lettered nothing leaves no DLQ file, and a reader's glob over the
    /// dataset (DuckDB's `read_parquet('…/*.parquet')`) then fails instead of finding no
    /// rows; this publishes one file of no rows with the DLQ's columns while the dataset has
    /// none. A bounded run calls it at its end, a group member once it joined.
    pub fn ensure_dlq_file(&self) -> Result<(), SinkError> {
        self.dlq.ensure_a_file()
    }

    /// Files finished since the last call, not yet visible.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// (partition, position of its first buffered row) of each raw file still open: raw
    /// rows from there on are not in any finished file.
    pub fn raw_unfinished(&self) -> impl Iterator<Item = (Partition, Offset)> + '_ {
        self.raw.unfinished()
    }
}
