//! A record: its exact bytes and where it came from. What every source yields and what the
//! router, the dead-letter sink and checkpoints name records by.

use std::sync::Arc;

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
