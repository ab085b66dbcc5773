//! Chunks of JSONL from another thread (the embedded generator, a stdin reader) → records.
//!
//! The producer sends through a bounded channel, so a slow processor slows it down instead
//! of growing memory, and waiting on the channel with a timeout lets the pipeline run
//! time-based work while a stream is quiet. A line may span chunks.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use super::{Assignment, Origin, Poll, Record, Source, SourceError};

/// Bytes per chunk read from stdin.
const READ_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the producer and the pipeline.
const CHANNEL_CHUNKS: usize = 64;

pub struct StreamSource {
    chunks: Receiver<io::Result<Vec<u8>>>,
    origin: Origin,
    chunk: Vec<u8>,
    cursor: usize,
    /// The start of a line whose end is in a later chunk.
    partial: Vec<u8>,
    /// The line handed out last, when it had to be assembled from several chunks.
    assembled: Vec<u8>,
    ended: bool,
    next_offset: i64,
    bytes_read: u64,
    /// Whether the one assignment, of the whole input, was handed out.
    assigned: bool,
}

impl StreamSource {
    /// Records get offsets `first_offset`, `first_offset + 1`, … in stream order.
    fn new(chunks: Receiver<io::Result<Vec<u8>>>, origin: Origin, first_offset: i64) -> Self {
        StreamSource {
            chunks,
            origin,
            chunk: Vec::new(),
            cursor: 0,
            partial: Vec::new(),
            assembled: Vec::new(),
            ended: false,
            next_offset: first_offset,
            bytes_read: 0,
            assigned: false,
        }
    }

    /// The embedded generator's stream, standing in for partition 0 of `topic`; offsets
    /// start at 0 like a new partition's.
    pub fn embedded(topic: &str) -> (mpsc::SyncSender<io::Result<Vec<u8>>>, Self) {
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CHUNKS);
        let origin = Origin::Topic {
            topic: Arc::from(topic),
            partition: 0,
        };
        (tx, StreamSource::new(rx, origin, 0))
    }

    /// Stdin, read by a thread of its own; offsets are 1-based line numbers and the origin
    /// is the file `-`.
    pub fn stdin() -> Self {
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CHUNKS);
        std::thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            loop {
                let mut chunk = vec![0; READ_CHUNK];
                let sent = match stdin.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        tx.send(Ok(chunk))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => tx.send(Err(e)),
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        let origin = Origin::File { path: "-".into() };
        StreamSource::new(rx, origin, 1)
    }
}

impl Source for StreamSource {
    fn poll(&mut self, wait: Duration) -> Result<Poll<'_>, SourceError> {
        if !self.assigned {
            self.assigned = true;
            return Ok(Poll::Assigned(Assignment::whole()));
        }
        loop {
            let rest = &self.chunk[self.cursor..];
            if let Some(len) = memchr::memchr(b'\n', rest) {
                self.cursor += len + 1;
                let line = if self.partial.is_empty() {
                    &self.chunk[self.cursor - len - 1..self.cursor - 1]
                } else {
                    self.assembled.clear();
                    self.assembled.append(&mut self.partial);
                    self.assembled
                        .extend_from_slice(&self.chunk[self.cursor - len - 1..self.cursor - 1]);
                    &self.assembled
                };
                let offset = self.next_offset;
                self.next_offset += 1;
                return Ok(Poll::Record(Record {
                    bytes: line,
                    offset,
                    origin: &self.origin,
                    time: None,
                }));
            }
            self.partial.extend_from_slice(rest);
            self.cursor = self.chunk.len();
            if self.ended {
                if self.partial.is_empty() {
                    return Ok(Poll::End);
                }
                // The last line had no newline; it is a record all the same.
                self.assembled = std::mem::take(&mut self.partial);
                let offset = self.next_offset;
                self.next_offset += 1;
                return Ok(Poll::Record(Record {
                    bytes: &self.assembled,
                    offset,
                    origin: &self.origin,
                    time: None,
                }));
            }
            match self.chunks.recv_timeout(wait) {
                Ok(Ok(chunk)) => {
                    self.bytes_read += chunk.len() as u64;
                    self.chunk = chunk;
                    self.cursor = 0;
                }
                Ok(Err(source)) => {
                    return Err(SourceError::Read {
                        path: "-".into(),
                        source,
                    });
                }
                Err(RecvTimeoutError::Timeout) => return Ok(Poll::Idle),
                Err(RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(source: &mut StreamSource) -> Vec<(Vec<u8>, i64)> {
        let mut got = Vec::new();
        loop {
            match source.poll(Duration::from_millis(10)).unwrap() {
                Poll::Record(r) => got.push((r.bytes.to_vec(), r.offset)),
                Poll::Idle => continue,
                Poll::End => return got,
                Poll::Assigned(a) => assert!(got.is_empty() && a.partitions == [0]),
                Poll::Revoked => panic!("a stream is never revoked"),
            }
        }
    }

    #[test]
    fn yields_each_line_of_each_chunk_then_ends() {
        let (tx, mut source) = StreamSource::embedded("t");
        tx.send(Ok(b"a\nbb\n".to_vec())).unwrap();
        tx.send(Ok(b"c\n".to_vec())).unwrap();
        drop(tx);
        assert_eq!(
            drain(&mut source),
            vec![(b"a".to_vec(), 0), (b"bb".to_vec(), 1), (b"c".to_vec(), 2)]
        );
        assert_eq!(source.bytes_read(), 7);
    }

    #[test]
    fn idles_while_the_producer_is_quiet() {
        let (_tx, mut source) = StreamSource::embedded("t");
        assert!(matches!(
            source.poll(Duration::from_millis(1)).unwrap(),
            Poll::Assigned(_)
        ));
        assert!(matches!(
            source.poll(Duration::from_millis(1)).unwrap(),
            Poll::Idle
        ));
    }

    proptest! {
        #[test]
        fn lines_come_out_whole_however_the_stream_is_cut(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x'), Just(b'\r'), any::<u8>()], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let (tx, mut source) = StreamSource::embedded("t");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.push(0);
            cuts.push(text.len());
            cuts.sort();
            let sender = std::thread::spawn(move || {
                for pair in cuts.windows(2) {
                    tx.send(Ok(text[pair[0]..pair[1]].to_vec())).unwrap();
                }
                text
            });
            let got = drain(&mut source);
            let text = sender.join().unwrap();
            let mut want: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            if text.is_empty() || text.ends_with(b"\n") {
                want.pop();
            }
            let got_lines: Vec<Vec<u8>> = got.iter().map(|(l, _)| l.clone()).collect();
            prop_assert_eq!(got_lines, want);
            prop_assert!(got.iter().enumerate().all(|(i, (_, o))| *o == i as i64));
        }
    }
}
