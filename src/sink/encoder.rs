//! One file's Parquet encoder, fed a buffer of rows at a time: made a batch and encoded on
//! the workers, so the router fills the next buffer meanwhile, or on the processing thread
//! when there are none.
//!
//! A file's batches are written one at a time, in the order given, whichever worker takes
//! them, so the file's bytes are the same for any number of threads. The size a file reached
//! is read only once every batch given is written, so a file rolls by size at the same batch
//! for any number of threads too.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use parquet::arrow::ArrowWriter;
use parquet::errors::ParquetError;

use super::rolling::RowBuffer;
use crate::storage::PendingFile;
use crate::workers::Workers;

type Writer = ArrowWriter<Box<dyn PendingFile>>;

pub struct Encoder<B: RowBuffer> {
    shared: Arc<Shared<B>>,
    workers: Workers,
    /// Batches given so far.
    given: u64,
    /// An upper bound of how much each batch given and not known written can grow the file.
    growth: VecDeque<u64>,
    /// The file's encoded size after `known.1` batches, as last seen.
    known: (u64, u64),
}

/// Empty row buffers of one dataset, for any of its files to fill again: written out by a
/// worker, or left by a file that is done. A buffer the processing thread allocated and a
/// worker freed came back to the allocator as fresh pages, zeroed by the kernel each time (a
/// quarter of the processing thread), and a new buffer per file cost as much again where
/// files are small (one per event hour of sparse input).
pub struct Spares<B>(Arc<Mutex<Vec<B>>>);

/// More than any one moment's buffers in flight between the processing thread and the
/// workers; beyond it, a buffer given back is freed.
const MAX_SPARES: usize = 8;

impl<B: RowBuffer> Spares<B> {
    /// An empty buffer to fill: a spare one, or a new one.
    pub fn take(&self) -> B {
        lock(&self.0).pop().unwrap_or_default()
    }

    /// `rows`, emptied, for another batch to fill.
    pub fn give(&self, rows: B) {
        let mut spares = lock(&self.0);
        if spares.len() < MAX_SPARES {
            spares.push(rows);
        }
    }
}

impl<B> Default for Spares<B> {
    fn default() -> Self {
        Spares(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<B> Clone for Spares<B> {
    fn clone(&self) -> Self {
        Spares(self.0.clone())
    }
}

struct Shared<B> {
    /// Rows given, not yet taken by a worker.
    queue: Mutex<VecDeque<B>>,
    /// Where buffers go once written out.
    spares: Spares<B>,
    state: Mutex<State>,
    written: Condvar,
}

struct State {
    /// Taken when the file is finished.
    writer: Option<Writer>,
    /// Batches written (or skipped after a failure).
    written: u64,
    /// Encoded bytes after them: written out, and buffered in the row group in progress.
    bytes: u64,
    failed: Option<ParquetError>,
}

/// A panic on a worker aborts the process (the pool's default), so no lock is ever found
/// poisoned; one on the processing thread leaves nothing to encode for.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: RowBuffer> Shared<B> {
    /// Writes the oldest rows not yet written. Holding the state's lock while taking them
    /// keeps the file's batches in the order given.
    fn write_next(&self) {
        let mut state = lock(&self.state);
        let mut rows = lock(&self.queue)
            .pop_front()
            .expect("one buffer queued per job");
        state.write(&mut rows);
        // Given back before the batch counts as written, so a file finished right after
        // finds it spare rather than allocating another.
        self.spares.give(rows);
        state.written += 1;
        self.written.notify_all();
    }
}

impl State {
    /// Writes `rows` as a batch, leaving them empty; after a failure only empties them.
    fn write<B: RowBuffer>(&mut self, rows: &mut B) {
        let batch = rows.take_batch();
        let writer = self
            .writer
            .as_mut()
            .expect("a file is finished after its last batch");
        if self.failed.is_none() {
            match writer.write(&batch) {
                Ok(()) => self.bytes = (writer.bytes_written() + writer.in_progress_size()) as u64,
                Err(e) => self.failed = Some(e),
            }
        }
    }
}

impl<B: RowBuffer> Encoder<B> {
    /// Buffers written out go to `spares`.
    pub fn new(writer: Writer, workers: Workers, spares: Spares<B>) -> Self {
        Encoder {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                spares,
                state: Mutex::new(State {
                    writer: Some(writer),
                    written: 0,
                    bytes: 0,
                    failed: None,
                }),
                written: Condvar::new(),
            }),
            workers,
            given: 0,
            growth: VecDeque::new(),
            known: (0, 0),
        }
    }

    /// Hands `rows` to be written after the rows before them.
    pub fn write(&mut self, rows: B) -> Result<(), ParquetError> {
        // Encoded, a value never takes more than twice its Arrow size (plain encoding's
        // length prefixes, dictionary indices, a codec's worst case); pages and a row
        // group's flush add headers and statistics.
        self.growth.push_back(2 * rows.size() as u64 + (64 << 10));
        self.given += 1;
        lock(&self.shared.queue).push_back(rows);
        let shared = self.shared.clone();
        self.workers.spawn(move || shared.write_next());
        // A write that failed stops the next: its error is the file's.
        match self.shared.state.try_lock() {
            Ok(mut state) => state.failed.take().map_or(Ok(()), Err),
            Err(_) => Ok(()),
        }
    }

    /// Whether the file's encoded size, once every batch given is written, is `limit` or
    /// more. Waits for the workers only when the size could have reached the limit.
    pub fn reached(&mut self, limit: u64) -> Result<bool, ParquetError> {
        if let Ok(state) = self.shared.state.try_lock() {
            self.known = (state.bytes, state.written);
        }
        let unknown = self.given - self.known.1;
        self.growth.drain(..self.growth.len() - unknown as usize);
        if self.known.0 + self.growth.iter().sum::<u64>() < limit {
            return Ok(false);
        }
        let mut state = self.settled();
        let bytes = state.bytes;
        if let Some(failed) = state.failed.take() {
            return Err(failed);
        }
        Ok(bytes >= limit)
    }

    /// The state once every batch given is written.
    fn settled(&self) -> MutexGuard<'_, State> {
        let mut state = lock(&self.shared.state);
        while state.written < self.given {
            state = self
                .shared
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state
    }

    /// Every batch given written, then `last` (on this thread: it would wait for a worker
    /// anyway) and the file's footer: the complete file. `last` is left empty.
    pub fn finish(self, last: &mut B) -> Result<Box<dyn PendingFile>, ParquetError> {
        let mut state = self.settled();
        if last.len() > 0 {
            state.write(last);
        }
        if let Some(failed) = state.failed.take() {
            return Err(failed);
        }
        let writer = state.writer.take().expect("finished once");
        drop(state);
        writer.into_inner()
    }
}
