//! Chunks of JSONL from another thread (the embedded generator, a stdin reader) → records.
//!
//! The producer sends through a bounded channel, so a slow processor slows it down instead
//! of growing memory, and waiting on the channel with a timeout lets the pipeline run
//! time-based work while a stream is quiet. A line may span chunks.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use super::{Assignment, Origin, Poll, READ_CHUNK, Source, SourceError};
use crate::decode::{Decoder, LineCutter};
use crate::workers::Workers;

/// Chunks in flight between the producer and the pipeline.
const CHANNEL_CHUNKS: usize = 64;

pub struct StreamSource {
    chunks: Receiver<io::Result<Vec<u8>>>,
    origin: Origin,
    cutter: LineCutter,
    decoder: Decoder,
    ended: bool,
    bytes_read: u64,
    /// Whether the one assignment, of the whole input, was handed out.
    assigned: bool,
}

impl StreamSource {
    /// Records get offsets `first_offset`, `first_offset + 1`, … in stream order.
    fn new(
        chunks: Receiver<io::Result<Vec<u8>>>,
        origin: Origin,
        first_offset: i64,
        workers: Workers,
    ) -> Self {
        StreamSource {
            chunks,
            origin,
            cutter: LineCutter::default(),
            decoder: Decoder::new(workers, first_offset),
            ended: false,
            bytes_read: 0,
            assigned: false,
        }
    }

    /// The embedded generator's stream, standing in for partition 0 of `topic`; offsets
    /// start at 0 like a new partition's.
    pub fn embedded(
        topic: &str,
        workers: Workers,
    ) -> (mpsc::SyncSender<io::Result<Vec<u8>>>, Self) {
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CHUNKS);
        let origin = Origin::Topic {
            topic: Arc::from(topic),
            partition: 0,
        };
        (tx, StreamSource::new(rx, origin, 0, workers))
    }

    /// Stdin, read by a thread of its own; offsets are 1-based line numbers and the origin
    /// is the file `-`.
    pub fn stdin(workers: Workers) -> Self {
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
        StreamSource::new(rx, origin, 1, workers)
    }
}

impl StreamSource {
    /// Takes in a chunk the producer sent, or the news that it ended.
    fn received(&mut self, chunk: Option<io::Result<Vec<u8>>>) -> Result<(), SourceError> {
        let lines = match chunk {
            Some(Ok(chunk)) => {
                self.bytes_read += chunk.len() as u64;
                self.cutter.append(chunk)
            }
            Some(Err(source)) => {
                return Err(SourceError::Read {
                    path: "-".into(),
                    source,
                });
            }
            None => {
                self.ended = true;
                self.cutter.end()
            }
        };
        if let Some(lines) = lines {
            self.decoder.push(lines);
        }
        Ok(())
    }
}

impl Source for StreamSource {
    fn poll(&mut self, wait: Duration) -> Result<Poll<'_>, SourceError> {
        if !self.assigned {
            self.assigned = true;
            return Ok(Poll::Assigned(Assignment::whole()));
        }
        // What has arrived goes to the workers at once; the stream is waited for only when
        // there is nothing left to lend.
        while !self.ended && self.decoder.wants_more() {
            match self.chunks.try_recv() {
                Ok(chunk) => self.received(Some(chunk))?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.received(None)?,
            }
        }
        if self.decoder.is_empty() && !self.ended {
            match self.chunks.recv_timeout(wait) {
                Ok(chunk) => self.received(Some(chunk))?,
                Err(RecvTimeoutError::Timeout) => return Ok(Poll::Idle),
                Err(RecvTimeoutError::Disconnected) => self.received(None)?,
            }
        }
        Ok(match self.decoder.next(&self.origin) {
            Some(decoded) => Poll::Record(decoded),
            None if self.ended => Poll::End,
            // Part of a line came: the rest is still on its way.
            None => Poll::Idle,
        })
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
                Poll::Record(d) => got.push((d.record.bytes.to_vec(), d.record.offset)),
                Poll::Idle => continue,
                Poll::End => return got,
                Poll::Assigned(a) => assert!(got.is_empty() && a.partitions == [0]),
                Poll::Revoked => panic!("a stream is never revoked"),
            }
        }
    }

    #[test]
    fn yields_each_line_of_each_chunk_then_ends() {
        let (tx, mut source) = StreamSource::embedded("t", Workers::none());
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
        let (_tx, mut source) = StreamSource::embedded("t", Workers::none());
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
            let workers = Workers::new(std::num::NonZero::new(2).unwrap());
            let (tx, mut source) = StreamSource::embedded("t", workers);
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
