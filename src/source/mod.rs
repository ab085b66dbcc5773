//! Where records come from: each source yields `(bytes, position)` in order.

mod file;
pub mod kafka;
mod stream;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use file::FileSource;
pub use stream::StreamSource;

/// Where a source's records live; goes into DLQ rows beside each record's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A JSONL file (`-` is stdin); offsets are 1-based line numbers.
    File { path: Arc<str> },
    /// A topic partition; offsets are the partition's offsets.
    Topic { topic: Arc<str>, partition: i32 },
}

impl Origin {
    /// The partition this origin is; a file is one stream, partition 0.
    pub fn partition(&self) -> i32 {
        match self {
            Origin::File { .. } => 0,
            Origin::Topic { partition, .. } => *partition,
        }
    }
}

/// One record: its exact bytes and its position within its origin.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub bytes: &'a [u8],
    pub offset: i64,
    pub origin: &'a Origin,
}

/// What a source has for the pipeline right now.
#[derive(Debug)]
pub enum Poll<'a> {
    Record(Record<'a>),
    /// Nothing arrived within the wait; time-based work (rolling files) may run.
    Idle,
    /// A bounded input has ended.
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open input {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read input {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

pub trait Source {
    /// Waits at most `wait` for the next record.
    fn poll(&mut self, wait: Duration) -> Result<Poll<'_>, SourceError>;
    /// Input bytes consumed so far, newlines included.
    fn bytes_read(&self) -> u64;
}

/// Opens a JSONL input: stdin for `-`, read by a thread of its own so that a quiet stream
/// still lets time-based work (publishing files by age) run; otherwise the file.
pub fn open_input(path: &Path) -> Result<Box<dyn Source>, SourceError> {
    if path == Path::new("-") {
        Ok(Box::new(StreamSource::stdin()))
    } else {
        Ok(Box::new(FileSource::open(path)?))
    }
}
