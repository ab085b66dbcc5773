//! A record: its exact bytes and where it came from. What every source yields and what the
//! router, the dead-letter sink and checkpoints name records by; and why a record can become
//! a dead letter, which validation decides for most kinds and the router for the rest.

use std::fmt;
use std::sync::Arc;

/// A partition of the topic; a file or stdin is one stream, partition 0.
pub type Partition = i32;
/// A record's position in its partition (a 1-based line number in a file).
pub type Offset = i64;
/// An event time, in milliseconds since the epoch.
pub type EventMs = i64;

/// Where a source's records live; goes into DLQ rows beside each record's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A JSONL file (`-` is stdin); offsets are 1-based line numbers.
    File { path: Arc<str> },
    /// A topic partition; offsets are the partition's offsets.
    Topic {
        topic: Arc<str>,
        partition: Partition,
    },
}

impl Origin {
    /// The partition this origin is; a file is one stream, partition 0.
    pub fn partition(&self) -> Partition {
        match self {
            Origin::File { .. } => 0,
            Origin::Topic { partition, .. } => *partition,
        }
    }
}

/// One record: its exact bytes, its position within its origin, and the time its source
/// gives it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub bytes: &'a [u8],
    pub offset: Offset,
    pub origin: &'a Origin,
    /// A Kafka record's timestamp; `None` for a file or stdin, whose records have none.
    pub time: Option<RecordTime>,
}

/// The timestamp a Kafka topic keeps with a record: what bounds how far ahead of it an
/// event time may be, and how far a partition's clock may go. The same on every replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTime {
    /// Set by the producer (the topic's default): as trustworthy as the producer's clock.
    CreateTime(EventMs),
    /// Set by the broker as it appended the record (`message.timestamp.type=LogAppendTime`).
    LogAppendTime(EventMs),
}

impl RecordTime {
    pub fn ms(self) -> EventMs {
        match self {
            RecordTime::CreateTime(ms) | RecordTime::LogAppendTime(ms) => ms,
        }
    }
}

/// Why a record went to the dead-letter queue; `as_str` is the `error_kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    InvalidUtf8,
    InvalidJson,
    MissingField,
    WrongType,
    InvalidUserId,
    InvalidPostcode,
    InvalidWebpage,
    InvalidTimestamp,
    LateEvent,
    FutureTimestamp,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidUtf8,
        ErrorKind::InvalidJson,
        ErrorKind::MissingField,
        ErrorKind::WrongType,
        ErrorKind::InvalidUserId,
        ErrorKind::InvalidPostcode,
        ErrorKind::InvalidWebpage,
        ErrorKind::InvalidTimestamp,
        ErrorKind::LateEvent,
        ErrorKind::FutureTimestamp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidUtf8 => "invalid_utf8",
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::InvalidUserId => "invalid_user_id",
            ErrorKind::InvalidPostcode => "invalid_postcode",
            ErrorKind::InvalidWebpage => "invalid_webpage",
            ErrorKind::InvalidTimestamp => "invalid_timestamp",
            ErrorKind::LateEvent => "late_event",
            ErrorKind::FutureTimestamp => "future_timestamp",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
