//! The in-process generator's stream → records, standing in for one topic partition.
//!
//! The generator sends chunks of JSONL through a bounded channel, so a slow processor
//! slows the generator down instead of growing memory.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::{Origin, Poll, Record, Source, SourceError};

pub struct EmbeddedSource {
    chunks: Receiver<Vec<u8>>,
    origin: Origin,
    chunk: Vec<u8>,
    cursor: usize,
    next_offset: i64,
}

impl EmbeddedSource {
    /// Records get offsets 0, 1, 2, … in the order the generator made them.
    pub fn new(chunks: Receiver<Vec<u8>>, topic: &str) -> Self {
        EmbeddedSource {
            chunks,
            origin: Origin::Topic {
                topic: Arc::from(topic),
                partition: 0,
            },
            chunk: Vec::new(),
            cursor: 0,
            next_offset: 0,
        }
    }
}

impl Source for EmbeddedSource {
    fn poll(&mut self, wait: Duration) -> Result<Poll<'_>, SourceError> {
        while self.cursor >= self.chunk.len() {
            match self.chunks.recv_timeout(wait) {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.cursor = 0;
                }
                Err(RecvTimeoutError::Timeout) => return Ok(Poll::Idle),
                Err(RecvTimeoutError::Disconnected) => return Ok(Poll::End),
            }
        }
        let rest = &self.chunk[self.cursor..];
        let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        self.cursor += len + 1;
        let offset = self.next_offset;
        self.next_offset += 1;
        Ok(Poll::Record(Record {
            bytes: &rest[..len],
            offset,
            origin: &self.origin,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_each_line_of_each_chunk_then_ends() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(b"a\nbb\n".to_vec()).unwrap();
        tx.send(b"c\n".to_vec()).unwrap();
        drop(tx);
        let mut source = EmbeddedSource::new(rx, "t");
        let mut got = Vec::new();
        while let Poll::Record(r) = source.poll(Duration::from_millis(10)).unwrap() {
            got.push((r.bytes.to_vec(), r.offset));
        }
        assert_eq!(
            got,
            vec![(b"a".to_vec(), 0), (b"bb".to_vec(), 1), (b"c".to_vec(), 2)]
        );
    }

    #[test]
    fn idles_while_the_generator_is_quiet() {
        let (_tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let mut source = EmbeddedSource::new(rx, "t");
        assert!(matches!(
            source.poll(Duration::from_millis(1)).unwrap(),
            Poll::Idle
        ));
    }
}
