//! Compaction beside a running processor: on a thread of its own, with its own handle on the
//! tables, so that rewriting files never holds up routing or a checkpoint. Each pass packs
//! the partitions [`Policy::Running`] takes as of the processor's watermark, one commit per
//! rewritten file. A commit of the processor's never conflicts with one of these (removals
//! with `dataChange = false`); a compaction that loses a race to another compactor fails
//! without committing and is planned afresh by the next pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use parquet::basic::Compression;

use super::compaction::Policy;
use super::delta::{TableError, Tables, added_before};
use crate::sink::Dataset;
use crate::storage::Storage;

/// Small files a partition that still receives rows holds before a pass packs them.
const OPEN_PARTITION_FILES: usize = 50;

/// The watermark's value before there is one.
const NO_WATERMARK: i64 = i64::MIN;

/// How a processor compacts its Delta tables while it runs.
#[derive(Debug, Clone, Copy)]
pub struct CompactionSettings {
    pub interval: Duration,
    pub target_bytes: u64,
    /// Dead letters added longer ago than this are removed from the DLQ table by each pass.
    pub dlq_retention: Duration,
}

/// Stops its thread when dropped, after the commit in progress, if any.
pub struct Compactor {
    watermark: Arc<AtomicI64>,
    /// Dropped to stop the thread, which looks between two rewritten files.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Starts compacting the tables `open` opens (on the compactor's thread, at its first
    /// pass, so that a run too short for one pays nothing), whose files `storage` holds, a
    /// pass every `settings.interval`.
    pub fn start(
        open: impl Fn() -> Result<Tables, TableError> + Send + 'static,
        storage: Arc<dyn Storage>,
        settings: CompactionSettings,
        compression: Compression,
    ) -> Result<Self, TableError> {
        let watermark = Arc::new(AtomicI64::new(NO_WATERMARK));
        let (stop, stopped) = mpsc::channel();
        let pass = Pass {
            open: Box::new(open),
            tables: None,
            storage,
            target: settings.target_bytes,
            dlq_retention: settings.dlq_retention,
            compression,
            stopped,
        };
        let seen = watermark.clone();
        let thread = std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || pass.every(settings.interval, &seen))
            .map_err(TableError::Runtime)?;
        Ok(Compactor {
            watermark,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The processor's watermark now: partitions whose event time ends before it receive
    /// no more on-time rows. It only moves forward, across rebalances too.
    pub fn watermark(&self, watermark: Option<i64>) {
        if let Some(watermark) = watermark {
            self.watermark.fetch_max(watermark, Ordering::Relaxed);
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the compactor thread panicked");
        }
    }
}

/// The compactor thread's own state.
struct Pass {
    open: Box<dyn Fn() -> Result<Tables, TableError> + Send>,
    /// Opened at the first pass; tried again at the next one when that fails.
    tables: Option<Tables>,
    storage: Arc<dyn Storage>,
    target: u64,
    dlq_retention: Duration,
    compression: Compression,
    stopped: Receiver<()>,
}

impl Pass {
    /// Runs a pass every `interval` until the compactor is dropped.
    fn every(mut self, interval: Duration, watermark: &AtomicI64) {
        while let Err(RecvTimeoutError::Timeout) = self.stopped.recv_timeout(interval) {
            let seen = watermark.load(Ordering::Relaxed);
            let policy = Policy::Running {
                watermark: (seen != NO_WATERMARK).then_some(seen),
                open_files: OPEN_PARTITION_FILES,
            };
            let retry = |e: TableError| {
                tracing::warn!(
                    "{e}; compaction tries again in {} s",
                    interval.as_secs_f64()
                );
            };
            if self.tables.is_none() {
                match (self.open)() {
                    Ok(tables) => self.tables = Some(tables),
                    Err(e) => {
                        retry(e);
                        continue;
                    }
                }
            }
            for dataset in Dataset::ALL {
                if let Err(e) = self.compact(dataset, policy) {
                    retry(e);
                }
                if is_stopped(&self.stopped) {
                    return;
                }
            }
            if let Err(e) = self.expire_dead_letters() {
                retry(e);
            }
        }
    }

    /// Removes the dead letters older than the retention from the DLQ table, as S3's rule
    /// deletes them from a Parquet folder.
    fn expire_dead_letters(&mut self) -> Result<(), TableError> {
        let tables = self.tables.as_mut().expect("opened before the pass");
        let expired = tables.expire(Dataset::Dlq, added_before(self.dlq_retention))?;
        if expired > 0 {
            tracing::info!(
                "removed {expired} dead-letter files older than {} days from {}",
                self.dlq_retention.as_secs() / 86_400,
                tables.location(Dataset::Dlq)
            );
        }
        Ok(())
    }

    /// Packs what `policy` takes of `dataset`'s table, one commit per file written.
    fn compact(&mut self, dataset: Dataset, policy: Policy) -> Result<(), TableError> {
        let tables = self.tables.as_mut().expect("opened before the pass");
        let merges = tables.plan_compaction(dataset, self.target, policy)?;
        for merge in &merges {
            if is_stopped(&self.stopped) {
                break;
            }
            tracing::debug!(
                "compacting {} files of {}/{} ({} bytes)",
                merge.inputs.len(),
                tables.location(dataset),
                merge.partition,
                merge.bytes
            );
            let written = tables.commit_merges(
                dataset,
                std::slice::from_ref(merge),
                &*self.storage,
                self.compression,
                self.target,
            )?;
            for file in written {
                tracing::info!(
                    "compacted {} files into {} ({} rows, {} bytes)",
                    merge.inputs.len(),
                    file.key,
                    file.rows,
                    file.bytes
                );
            }
        }
        Ok(())
    }
}

/// Whether the compactor was dropped.
fn is_stopped(stopped: &Receiver<()>) -> bool {
    matches!(stopped.try_recv(), Err(TryRecvError::Disconnected))
}
