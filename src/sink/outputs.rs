//! The three datasets together: what the router writes to, and what it gets back.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::basic::Compression;
use parquet::errors::ParquetError;

use super::aggregated::AggregatedSink;
use super::dlq::{DeadLetter, DlqSink};
use super::raw::RawSink;
use super::rolling::FileSettings;
use crate::config::Buckets;
use crate::storage::{Storage, StorageError};
use crate::validate::Pageview;
use crate::window::ClosedWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    Raw,
    Aggregated,
    Dlq,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [Dataset::Raw, Dataset::Aggregated, Dataset::Dlq];

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
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// How files are named and when they roll.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub buckets: Buckets,
    /// Labels this input in file names, so two inputs never write the same key.
    pub source_tag: String,
    pub max_file_bytes: u64,
    pub max_file_age: Duration,
    pub compression: Compression,
}

pub struct Sinks {
    raw: RawSink,
    aggregated: AggregatedSink,
    dlq: DlqSink,
    written: Vec<WrittenFile>,
}

impl Sinks {
    pub fn new(storage: Arc<dyn Storage>, config: &SinkConfig) -> Self {
        let settings = |dataset, bucket: &str| FileSettings {
            dataset,
            bucket: bucket.to_string(),
            storage: storage.clone(),
            source_tag: config.source_tag.clone(),
            max_bytes: config.max_file_bytes,
            max_age: config.max_file_age,
            compression: config.compression,
        };
        Sinks {
            raw: RawSink::new(settings(Dataset::Raw, &config.buckets.raw)),
            aggregated: AggregatedSink::new(settings(
                Dataset::Aggregated,
                &config.buckets.aggregated,
            )),
            dlq: DlqSink::new(settings(Dataset::Dlq, &config.buckets.dlq)),
            written: Vec::new(),
        }
    }

    pub fn raw(&mut self, event: &Pageview<'_>, position: i64) -> Result<(), SinkError> {
        self.raw.push(event, position, &mut self.written)
    }

    pub fn dead_letter(&mut self, letter: &DeadLetter<'_>) -> Result<(), SinkError> {
        self.dlq.push(letter, &mut self.written)
    }

    pub fn window(&mut self, window: &ClosedWindow) -> Result<(), SinkError> {
        self.aggregated.push(window, &mut self.written)
    }

    /// Publishes every file that has been open longer than the age limit.
    pub fn publish_due(&mut self, now: Instant) -> Result<(), SinkError> {
        self.raw.publish_due(now, &mut self.written)?;
        self.aggregated.publish_due(now, &mut self.written)?;
        self.dlq.publish_due(now, &mut self.written)
    }

    /// Publishes everything buffered: the input has ended or the process is stopping.
    pub fn publish_all(&mut self) -> Result<(), SinkError> {
        self.raw.publish_all(&mut self.written)?;
        self.aggregated.publish_all(&mut self.written)?;
        self.dlq.publish_all(&mut self.written)
    }

    /// Files published since the last call.
    pub fn take_written(&mut self) -> std::vec::Drain<'_, WrittenFile> {
        self.written.drain(..)
    }
}
