//! Records → records with what validation made of them, in input order, for the router.
//!
//! A file or a stream hands its lines over a chunk at a time ([`Lines`]). Each chunk is
//! validated on the workers while the router routes the chunks before it, and its records
//! are then lent one at a time, in order. With no workers its lines are lent unvalidated and
//! [`Decoded::event`] validates each on the processing thread as the router routes it. Either
//! way the router sees the same records with the same outcomes in the same order; only which
//! thread validated them differs.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::mpsc;

use crate::record::{Offset, Origin, Record};
use crate::validate::{Pageview, Rejection, validate};
use crate::workers::Workers;

/// A record and what validation made of it.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub record: Record<'a>,
    /// `None`: not validated yet; [`Decoded::event`] validates it on the asking thread.
    event: Option<Result<Pageview<'a>, Rejection>>,
}

impl<'a> Decoded<'a> {
    /// A record no worker validated: a source that lends one record at a time.
    pub fn new(record: Record<'a>) -> Self {
        Decoded {
            record,
            event: None,
        }
    }

    /// The record and what validation made of it.
    pub fn event(self) -> (Record<'a>, Result<Pageview<'a>, Rejection>) {
        let event = self.event.unwrap_or_else(|| validate(self.record.bytes));
        (self.record, event)
    }
}

/// Whole lines of a stream, each ending in `\n` except the input's last when it had none.
#[derive(Debug)]
pub struct Lines(Vec<u8>);

impl Lines {
    /// Each line, without its newline.
    pub fn each(&self) -> impl Iterator<Item = &[u8]> + '_ {
        spans(&self.0).map(|span| &self.0[span])
    }
}

/// The end of the line starting at `start` of `bytes`: its newline, or the end of `bytes`.
fn line_end(bytes: &[u8], start: usize) -> usize {
    memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |n| start + n)
}

/// Each line's span in `bytes`, without its newline.
fn spans(bytes: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let end = line_end(bytes, start);
        let span = start..end;
        start = end + 1;
        Some(span)
    })
}

/// Cuts a stream's bytes, as they come, into chunks of whole lines.
#[derive(Debug, Default)]
pub struct LineCutter {
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
}

impl LineCutter {
    /// Reads up to `chunk` bytes of `input` after the unfinished line (no copy to join it):
    /// the whole lines so far, if any, and whether the input ended.
    pub fn read(
        &mut self,
        input: &mut impl Read,
        chunk: usize,
    ) -> io::Result<(Option<Lines>, bool)> {
        let mut buffer = std::mem::take(&mut self.partial);
        buffer.reserve(chunk);
        // Into the buffer's spare room: no zeroing either.
        let n = input.take(chunk as u64).read_to_end(&mut buffer)?;
        if n == 0 {
            self.partial = buffer;
            return Ok((self.end(), true));
        }
        Ok((self.cut(buffer), false))
    }

    /// `filled`, the unfinished line with the next bytes appended: its whole lines, if
    /// there are any; the rest waits for more.
    fn cut(&mut self, mut filled: Vec<u8>) -> Option<Lines> {
        let end = memchr::memrchr(b'\n', &filled).map_or(0, |last| last + 1);
        self.partial = filled[end..].to_vec();
        filled.truncate(end);
        (end > 0).then_some(Lines(filled))
    }

    /// The next bytes, as another thread sent them.
    pub fn append(&mut self, chunk: Vec<u8>) -> Option<Lines> {
        if self.partial.is_empty() {
            return self.cut(chunk);
        }
        let mut joined = std::mem::take(&mut self.partial);
        joined.extend_from_slice(&chunk);
        self.cut(joined)
    }

    /// The stream ended: its last line, when it had no newline, is a record all the same.
    pub fn end(&mut self) -> Option<Lines> {
        (!self.partial.is_empty()).then(|| Lines(std::mem::take(&mut self.partial)))
    }
}

#[derive(Debug)]
enum Outcome {
    Valid {
        user_id: i64,
        timestamp: i64,
        /// Where in the chunk's `texts` the strings are.
        postcode: Range<usize>,
        webpage: Range<usize>,
    },
    Invalid(Rejection),
}

/// A chunk of lines being lent, validated by a worker or not yet.
#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    /// Where the next line to lend starts.
    start: usize,
    /// Whether a worker validated the lines: each line's end (its newline's index, or the
    /// chunk's length) and outcome are then in `outcomes`.
    validated: bool,
    outcomes: VecDeque<(usize, Outcome)>,
    /// The valid events' strings, copied: lending them from here needs no second UTF-8
    /// check, which slicing the bytes would.
    texts: String,
}

/// The buffers of a chunk lent out, for the next: a worker fills them and the processing
/// thread empties them, so neither allocates per chunk, nor frees what the other allocated.
#[derive(Debug, Default)]
struct Spare {
    outcomes: VecDeque<(usize, Outcome)>,
    texts: String,
}

impl Chunk {
    fn new(Lines(bytes): Lines, spare: Spare) -> Self {
        Chunk {
            bytes,
            start: 0,
            validated: false,
            outcomes: spare.outcomes,
            texts: spare.texts,
        }
    }

    fn exhausted(&self) -> bool {
        self.start >= self.bytes.len()
    }

    /// Validates every line, on a worker.
    fn validate(mut self) -> Self {
        for span in spans(&self.bytes) {
            let end = span.end;
            let outcome = match validate(&self.bytes[span]) {
                Ok(event) => Outcome::Valid {
                    user_id: event.user_id,
                    timestamp: event.timestamp,
                    postcode: keep(&event.postcode, &mut self.texts),
                    webpage: keep(&event.webpage, &mut self.texts),
                },
                Err(rejection) => Outcome::Invalid(rejection),
            };
            self.outcomes.push_back((end, outcome));
        }
        self.validated = true;
        self
    }

    /// The next line's record as `offset` of `origin`, and its length with its newline.
    fn lend<'a>(&'a mut self, offset: Offset, origin: &'a Origin) -> Option<(Decoded<'a>, u64)> {
        if self.exhausted() {
            return None;
        }
        let start = self.start;
        let (end, outcome) = if self.validated {
            let (end, outcome) = self.outcomes.pop_front().expect("one outcome a line");
            (end, Some(outcome))
        } else {
            (line_end(&self.bytes, start), None)
        };
        self.start = end + 1;
        let taken = (end + 1).min(self.bytes.len()) - start;
        let string = |range: Range<usize>| Cow::Borrowed(&self.texts[range]);
        let event = outcome.map(|outcome| match outcome {
            Outcome::Valid {
                user_id,
                timestamp,
                postcode,
                webpage,
            } => Ok(Pageview {
                user_id,
                postcode: string(postcode),
                webpage: string(webpage),
                timestamp,
            }),
            Outcome::Invalid(rejection) => Err(rejection),
        });
        let record = Record {
            bytes: &self.bytes[start..end],
            offset,
            origin,
            time: None,
        };
        Some((Decoded { record, event }, taken as u64))
    }

    /// Its buffers, emptied, once lent out.
    fn spare(mut self) -> Spare {
        self.texts.clear();
        Spare {
            outcomes: self.outcomes,
            texts: self.texts,
        }
    }
}

/// Appends `value` to `texts`: where it is there.
fn keep(value: &str, texts: &mut String) -> Range<usize> {
    let start = texts.len();
    texts.push_str(value);
    start..texts.len()
}

/// A chunk on its way: being validated on a worker, or waiting for its turn on this thread.
enum Pending {
    Workers(mpsc::Receiver<Chunk>),
    Here(Chunk),
}

/// Chunks of one stream's lines, validated ahead on the workers, lent back in order. With
/// no workers, lines are lent unvalidated and the router validates each as it routes it,
/// while the line is still in cache.
pub struct Decoder {
    workers: Workers,
    pending: VecDeque<Pending>,
    current: Option<Chunk>,
    spares: Vec<Spare>,
    next_offset: Offset,
    /// Bytes of the records lent so far, newlines included.
    lent_bytes: u64,
}

impl Decoder {
    /// Records get offsets `first_offset`, `first_offset + 1`, … in stream order.
    pub fn new(workers: Workers, first_offset: Offset) -> Self {
        Decoder {
            workers,
            pending: VecDeque::new(),
            current: None,
            spares: Vec::new(),
            next_offset: first_offset,
            lent_bytes: 0,
        }
    }

    /// Whether the source should read another chunk now: two a worker are in flight, so
    /// the workers are never short of work while the router routes; one with no workers.
    pub fn wants_more(&self) -> bool {
        let ahead = if self.workers.parallel() {
            2 * self.workers.threads()
        } else {
            1
        };
        self.pending.len() < ahead
    }

    /// True when every chunk given was lent out.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.current.as_ref().is_none_or(Chunk::exhausted)
    }

    pub fn push(&mut self, lines: Lines) {
        let chunk = Chunk::new(lines, self.spares.pop().unwrap_or_default());
        if !self.workers.parallel() {
            return self.pending.push_back(Pending::Here(chunk));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.workers.spawn(move || {
            // The decoder may be gone (the run stopped): nobody needs this chunk then.
            let _ = tx.send(chunk.validate());
        });
        self.pending.push_back(Pending::Workers(rx));
    }

    /// The next record, waiting for its chunk's validation if a worker is still on it;
    /// `None` once every chunk given is lent out.
    pub fn next<'a>(&'a mut self, origin: &'a Origin) -> Option<Decoded<'a>> {
        if self.current.as_ref().is_none_or(Chunk::exhausted) {
            let next = match self.pending.pop_front()? {
                Pending::Here(chunk) => chunk,
                Pending::Workers(rx) => rx.recv().expect("a decoding worker panicked"),
            };
            if let Some(done) = self.current.replace(next) {
                self.spares.push(done.spare());
            }
        }
        let current = self.current.as_mut().expect("set above");
        let (decoded, taken) = current.lend(self.next_offset, origin)?;
        self.next_offset += 1;
        self.lent_bytes += taken;
        Some(decoded)
    }

    /// Bytes of the records lent so far, newlines included.
    pub fn lent_bytes(&self) -> u64 {
        self.lent_bytes
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZero;

    use proptest::prelude::*;

    use super::*;

    /// Every record of `text` cut at `cuts`, with `workers`: (bytes, offset, outcome).
    fn decode_all(
        text: &[u8],
        cuts: &[usize],
        workers: Workers,
    ) -> Vec<(Vec<u8>, Offset, Result<Pageview<'static>, Rejection>)> {
        let origin = Origin::File {
            path: "in.jsonl".into(),
        };
        let mut cutter = LineCutter::default();
        let mut decoder = Decoder::new(workers, 1);
        let mut chunks: Vec<Lines> = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&text.len()]) {
            let cut = cut.clamp(from, text.len());
            chunks.extend(cutter.append(text[from..cut].to_vec()));
            from = cut;
        }
        chunks.extend(cutter.end());
        let mut got = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
        }
        while let Some(d) = decoder.next(&origin) {
            let (record, event) = d.event();
            let event = event.map(|e| Pageview {
                user_id: e.user_id,
                postcode: Cow::Owned(e.postcode.into_owned()),
                webpage: Cow::Owned(e.webpage.into_owned()),
                timestamp: e.timestamp,
            });
            got.push((record.bytes.to_vec(), record.offset, event));
        }
        assert!(decoder.is_empty());
        assert_eq!(decoder.lent_bytes(), text.len() as u64);
        got
    }

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#"{"user_id": 1, "postcode": "SW19", "webpage": "https://a.example/", "timestamp": 1700000000000}"#.to_string()),
            Just(r#"{"user_id":2,"postcode":"E\u0031","webpage":"https:\/\/b.example\/\u00e9","timestamp":1700000000001}"#.to_string()),
            Just(r#"{"user_id": 3, "postcode": "sw19"}"#.to_string()),
            Just("not json".to_string()),
            Just(String::new()),
            "[ -~]{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn every_line_comes_out_once_in_order_with_what_validate_says(
            lines in proptest::collection::vec(line(), 0..30),
            newline_at_end in any::<bool>(),
            cuts in proptest::collection::vec(0usize..3000, 0..8),
        ) {
            let mut text = lines.join("\n");
            if newline_at_end && !lines.is_empty() {
                text.push('\n');
            }
            let mut cuts = cuts;
            cuts.sort();
            let here = decode_all(text.as_bytes(), &cuts, Workers::none());
            let pool = decode_all(text.as_bytes(), &cuts, Workers::new(NonZero::new(3).unwrap()));
            let mut want: Vec<&[u8]> = text.as_bytes().split(|&b| b == b'\n').collect();
            if text.is_empty() || text.ends_with('\n') {
                want.pop();
            }
            prop_assert_eq!(here.len(), want.len());
            for (i, ((bytes, offset, event), line)) in here.iter().zip(&want).enumerate() {
                prop_assert_eq!(bytes.as_slice(), *line);
                prop_assert_eq!(*offset, i as i64 + 1);
                prop_assert_eq!(event, &validate(line));
            }
            prop_assert_eq!(here, pool);
        }
    }

    #[test]
    fn a_line_longer_than_any_chunk_is_joined() {
        let long = format!(
            r#"{{"user_id": 1, "postcode": "SW19", "webpage": "https://a.example/{}", "timestamp": 1700000000000}}"#,
            "x".repeat(5000)
        );
        let text = format!("{long}\n{long}");
        let cuts: Vec<usize> = (1..text.len()).step_by(97).collect();
        let got = decode_all(text.as_bytes(), &cuts, Workers::none());
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(bytes, _, event)| bytes == long.as_bytes()
            && event.as_ref().is_ok_and(|e| e.webpage.len() > 5000)));
    }
}
