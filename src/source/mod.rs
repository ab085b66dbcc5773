//! Where records come from: each source yields `(bytes, position)` in order.

mod file;
pub mod kafka;
mod stream;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::record::{Origin, Record};
pub use file::FileSource;
pub use stream::StreamSource;

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
