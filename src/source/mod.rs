//! Where records come from: each source yields records in order, and events the driver
//! acts on: nothing came (idle), the input ended, partitions were assigned or revoked.
//! A bounded input (a file, stdin, the embedded generator) is assigned once, all of it;
//! a Kafka group member as its group rebalances.

mod file;
pub mod kafka;
mod stream;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checkpoint::Recovery;
use crate::commit::CommitError;
pub use crate::decode::Decoded;
use crate::kafka::KafkaError;
pub use crate::record::{Offset, Origin, Partition, Record, RecordTime};
use crate::workers::Workers;
pub use file::{FileSource, READ_CHUNK};
pub use stream::StreamSource;

/// What a source has for the pipeline right now.
#[derive(Debug)]
pub enum Poll<'a> {
    /// The next record, validated.
    Record(Decoded<'a>),
    /// Nothing arrived within the wait; time-based work (rolling files) may run.
    Idle,
    /// A bounded input has ended.
    End,
    /// These partitions are now this processor's, resuming from the state in the
    /// assignment; records of theirs come only after this.
    Assigned(Box<Assignment>),
    /// Every partition was taken away: state that no checkpoint holds must be dropped, since
    /// the next owner resumes from the checkpoints.
    Revoked,
}

#[derive(Debug)]
pub struct Assignment {
    pub partitions: Vec<i32>,
    pub recovery: Recovery,
}

impl Assignment {
    /// A bounded input: one stream, partition 0, from its start.
    pub fn whole() -> Box<Self> {
        Box::new(Assignment {
            partitions: vec![0],
            recovery: Recovery::default(),
        })
    }
}

/// What a source's own time-based work found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticked {
    Nothing,
    /// The partitions were lost (the source replaced its client): nothing may be committed
    /// for them any more.
    Revoked,
    /// Asked to stop at the end of the input, the reader has read up to where it ended.
    Drained,
}

/// Whether a reader got to the given (partition, offset after the last record) ends.
pub type HasRead<'a> = &'a dyn Fn(&[(Partition, Offset)]) -> bool;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open input {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read input {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the Kafka consumer stopped for good: {0}")]
    Consumer(rdkafka::error::KafkaError),
    #[error(transparent)]
    Commit(#[from] CommitError),
}

pub trait Source {
    /// Waits at most `wait` for the next record.
    fn poll(&mut self, wait: Duration) -> Result<Poll<'_>, SourceError>;
    /// Input bytes consumed so far, newlines included.
    fn bytes_read(&self) -> u64;
    /// The source's own time-based work, about every 100 ms; `read` says how far the
    /// processor has read what it owns (`None` while it owns nothing).
    fn tick(&mut self, _now: Instant, _read: Option<HasRead<'_>>) -> Result<Ticked, SourceError> {
        Ok(Ticked::Nothing)
    }
    /// A commit made the input durable up to these (partition, next offset).
    fn committed(&mut self, _offsets: &[(Partition, Offset)]) {}
    /// (partition, records not yet read) of each partition read.
    fn lag(&self) -> Vec<(Partition, i64)> {
        Vec::new()
    }
}

/// Opens a JSONL input: stdin for `-`, read by a thread of its own so that a quiet stream
/// still lets time-based work (publishing files by age) run; otherwise the file. Its lines
/// are validated on `workers`.
pub fn open_input(path: &Path, workers: Workers) -> Result<Box<dyn Source>, SourceError> {
    if path == Path::new("-") {
        Ok(Box::new(StreamSource::stdin(workers)))
    } else {
        Ok(Box::new(FileSource::open(path, workers)?))
    }
}
