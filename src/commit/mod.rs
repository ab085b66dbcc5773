//! Finished files → files readers see, and how far the input is done: the one place the
//! commit protocol lives (docs/EXACTLY_ONCE.md).
//!
//! Two strategies. A bounded input (a file, stdin, the embedded generator) publishes each
//! finished file at once and makes every window final when it ends: a rerun starts over.
//! Kafka publishes only through checkpoints: the router's state is sealed, its files staged,
//! and a [`CommitPoint`] makes the checkpoint durable before anything becomes visible and
//! before Kafka is told an offset. The commit point is the seam a table format plugs into:
//! manifests beside Parquet folders ([`Manifests`]), or the raw Delta table's own log
//! ([`TableLog`]).

mod compaction;
mod compactor;
mod delta;
mod manifests;
mod markers;
mod merge;
mod merger;
mod progress;
mod table_log;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use compactor::{CompactionSettings, Compactor};
pub use delta::{
    TableError, TableRoot, Tables, added_before, current_files, expire, has_table, vacuum,
};
pub use manifests::Manifests;
pub use merge::{Hold, Horizon};
pub use merger::{Merger, Pass};
pub use progress::{GroupProgress, PartitionProgress, group_progress};
pub use table_log::TableLog;

use crate::checkpoint::{self, CheckpointError, Cursors, Manifest, Recovery, StagedFile};
use crate::record::{Offset, Partition};
use crate::route::Router;
use crate::sink::{Dataset, SinkError, WrittenFile};

/// Where a checkpoint becomes durable, and how its staged files become visible.
pub trait CommitPoint: Send + Sync {
    /// Where the `assigned` partitions resume. It only reads, so it may run inside the Kafka
    /// client's rebalance callback, where the partitions must be given their offsets.
    fn recover(&self, assigned: &[i32]) -> Result<Recovery, CommitError>;
    /// Finishes what earlier owners of the recovered partitions left half done: the files
    /// of their last checkpoints are published, staged files no checkpoint names removed,
    /// and superseded checkpoints deleted. Runs before the first record is routed.
    fn complete(&self, recovery: &Recovery) -> Result<(), CommitError>;
    /// The commit point: `manifest` is durable once this returns, then its files are made
    /// visible and the checkpoints it supersedes (`replaced`) deleted. Returns the name the
    /// next commit replaces.
    fn commit(&self, manifest: &Manifest, replaced: &[String]) -> Result<String, CommitError>;
    /// Where the group's processors put closed windows, as partial counts for
    /// [`CommitPoint::merge`] to merge; `None` when they write them as final rows.
    fn partials(&self) -> Option<&str> {
        None
    }
    /// Merges what the group's checkpoints made final into one row per (window, postcode):
    /// after `committed`, a checkpoint of this processor's, or when it is given partitions
    /// (`None`). `None` where windows are not merged, or `committed` changed nothing a merge
    /// could use.
    fn merge(&self, _committed: Option<&Manifest>) -> Result<Option<Pass>, CommitError> {
        Ok(None)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Table(#[from] TableError),
}

impl From<crate::storage::StorageError> for CommitError {
    fn from(e: crate::storage::StorageError) -> Self {
        CommitError::Checkpoint(e.into())
    }
}

/// (partition, next offset): how far a commit made the input durable, for Kafka to be told.
pub type Offsets = Vec<(Partition, Offset)>;

/// The commit protocol of one run, and the compactor of its tables, if they have one.
pub struct Commit {
    protocol: Protocol,
    compactor: Option<Compactor>,
}

enum Protocol {
    /// Bounded input: files appear as they are finished; with tables, as a commit adds them.
    Immediate(Option<Box<TableAdds>>),
    /// Kafka: files appear with the checkpoint that names them.
    Checkpointed(Box<Checkpointed>),
}

impl Commit {
    /// Bounded input, into Parquet folders or `tables`.
    pub fn immediate(tables: Option<Box<Tables>>) -> Self {
        Commit {
            protocol: Protocol::Immediate(tables.map(|tables| {
                Box::new(TableAdds {
                    tables,
                    pending: Vec::new(),
                    last: Instant::now(),
                })
            })),
            compactor: None,
        }
    }

    /// A Kafka group member's checkpoints.
    pub fn checkpointed(checkpointed: Checkpointed) -> Self {
        Commit {
            protocol: Protocol::Checkpointed(Box::new(checkpointed)),
            compactor: None,
        }
    }

    /// Compacts the tables beside the run, told the watermark at every tick; stopped when
    /// the run ends.
    pub fn compacted_by(mut self, compactor: Option<Compactor>) -> Self {
        self.compactor = compactor;
        self
    }

    /// Partitions were assigned and resume from `recovery`: what their earlier owners left
    /// half done is finished first.
    pub fn assigned(&mut self, recovery: &Recovery) -> Result<(), CommitError> {
        if let Protocol::Checkpointed(c) = &mut self.protocol {
            c.point.complete(recovery)?;
            c.current = Some(Assigned::new(recovery));
            c.merge(None)?;
        }
        Ok(())
    }

    /// Every partition was taken away: what no checkpoint holds is dropped, since the next
    /// owner resumes from the checkpoints.
    pub fn revoked(&mut self) {
        if let Protocol::Checkpointed(c) = &mut self.protocol {
            c.current = None;
        }
    }

    /// Time-based work: publishes finished files, or checkpoints when one is due.
    pub fn tick(&mut self, router: &mut Router, now: Instant) -> Result<Offsets, CommitError> {
        if let Some(compactor) = &self.compactor {
            compactor.watermark(router.watermarks().current());
        }
        match &mut self.protocol {
            Protocol::Immediate(adds) => added(adds, router.publish_finished()?, Some(now)),
            Protocol::Checkpointed(c) => c.checkpoint(router, now, false),
        }
    }

    /// The run ends. A bounded input's windows are all final and every file is published; a
    /// Kafka run's last checkpoint publishes every file and keeps open windows open, for the
    /// next run to continue.
    pub fn finish(&mut self, router: &mut Router, now: Instant) -> Result<Offsets, CommitError> {
        match &mut self.protocol {
            Protocol::Immediate(adds) => added(adds, router.finish()?, None),
            Protocol::Checkpointed(c) => c.checkpoint(router, now, true),
        }
    }
}

/// How often a bounded input's tables commit at most. Each commit costs delta-rs a replay of
/// every file in the table, so one per tick made sparse input (a file per event hour, many
/// hours a second) spend a fifth of its CPU there; a second is as fresh as a reader needs of
/// files that roll every `FILE_MAX_AGE_MS`.
const TABLE_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// A bounded input's tables, and the files published since their last commit.
struct TableAdds {
    tables: Box<Tables>,
    pending: Vec<WrittenFile>,
    last: Instant,
}

/// Bounded input: `published` files are visible as they are; with tables, once the tables'
/// commit adds them: at `now` if the last was long enough ago, at the end (`None`) always.
/// No offsets to tell anyone.
fn added(
    adds: &mut Option<Box<TableAdds>>,
    published: Vec<WrittenFile>,
    now: Option<Instant>,
) -> Result<Offsets, CommitError> {
    if let Some(adds) = adds {
        adds.pending.extend(published);
        let due = now.is_none_or(|now| now.duration_since(adds.last) >= TABLE_COMMIT_INTERVAL);
        if due && !adds.pending.is_empty() {
            adds.tables.commit(&adds.pending)?;
            adds.pending.clear();
            adds.last = now.unwrap_or_else(Instant::now);
        }
    }
    Ok(Offsets::new())
}

/// Something told of each `T` as it happens.
type Told<T> = Box<dyn Fn(&T) + Send>;

/// Checkpoints of a Kafka group member: when they are due, and what each one saves.
pub struct Checkpointed {
    point: Arc<dyn CommitPoint>,
    member: String,
    topic: String,
    interval: Duration,
    /// Told how long each checkpoint took (metrics).
    timed: Option<Box<dyn Fn(Duration) + Send>>,
    /// The checkpoints of the current assignment.
    current: Option<Assigned>,
    /// Told what each merge pass found (metrics).
    merges_told: Option<Told<Pass>>,
}

impl Checkpointed {
    /// `member` names this processor in checkpoints; one is made at least every `interval`.
    pub fn new(point: Arc<dyn CommitPoint>, member: &str, topic: &str, interval: Duration) -> Self {
        Checkpointed {
            point,
            member: crate::sink::naming::source_tag(member),
            topic: topic.into(),
            interval,
            timed: None,
            current: None,
            merges_told: None,
        }
    }

    /// Tells `told` what each merge pass of the group's windows found and did.
    pub fn merges_told_to(mut self, told: impl Fn(&Pass) + Send + 'static) -> Self {
        self.merges_told = Some(Box::new(told));
        self
    }

    /// Tells `timed` how long each checkpoint that commits takes.
    pub fn timed_by(mut self, timed: impl Fn(Duration) + Send + 'static) -> Self {
        self.timed = Some(Box::new(timed));
        self
    }

    /// Seals the router, stages its finished files, commits the checkpoint naming them and
    /// publishes them, when one is due or `stopping`.
    fn checkpoint(
        &mut self,
        router: &mut Router,
        now: Instant,
        stopping: bool,
    ) -> Result<Offsets, CommitError> {
        let Some(current) = &mut self.current else {
            return Ok(Offsets::new());
        };
        // The first one is due at once: it claims the partitions, and a processor that
        // owned them before and still believes it does (frozen past its session) is fenced
        // from then on, rather than after this one's first interval.
        let since_last = current
            .last
            .map_or(Duration::MAX, |last| now.duration_since(last));
        if !stopping && !checkpoint::due(since_last, self.interval, router.has_closed_windows()) {
            return Ok(Offsets::new());
        }
        current.last = Some(now);
        let mut sealed = router.seal(stopping)?;
        for finished in &mut sealed.finished {
            finished.file.write_behind()?;
        }
        let mut files = Vec::with_capacity(sealed.finished.len());
        let mut written = Vec::with_capacity(sealed.finished.len());
        for finished in sealed.finished {
            if finished.dataset == Dataset::Raw {
                current
                    .cursors
                    .raw_file(finished.partition, finished.hour, finished.last);
            }
            let staged = finished.file.stage()?;
            written.push(WrittenFile {
                dataset: finished.dataset,
                key: finished.key.clone(),
                rows: finished.rows,
                bytes: staged.bytes,
            });
            files.push(StagedFile {
                staged: staged.id,
                key: finished.key,
                rows: finished.rows,
                bytes: staged.bytes,
            });
        }
        let manifest = Manifest {
            version: checkpoint::VERSION,
            epoch: current.epoch,
            member: self.member.clone(),
            topic: self.topic.clone(),
            topic_partitions: current.topic_partitions,
            watermark: sealed.watermark,
            partitions: current.cursors.seal(&sealed.partitions),
            windows: sealed.windows,
            files,
        };
        let offsets: Offsets = manifest
            .partitions
            .iter()
            .map(|(&p, s)| (p, s.next))
            .collect();
        let unchanged = current.previous.as_ref().is_some_and(|p| {
            manifest.files.is_empty()
                && p.partitions == manifest.partitions
                && p.windows == manifest.windows
                && p.watermark == manifest.watermark
        });
        if unchanged || manifest.partitions.is_empty() {
            router.published(&written);
            return Ok(offsets);
        }
        let name = self.point.commit(&manifest, &current.replaced)?;
        current.replaced = vec![name];
        current.epoch += 1;
        current.previous = Some(manifest);
        router.published(&written);
        if let Some(timed) = &self.timed {
            timed(now.elapsed());
        }
        self.merge(self.current.as_ref().and_then(|c| c.previous.as_ref()))?;
        Ok(offsets)
    }

    /// Merges what the group's checkpoints, `committed` included, made final.
    fn merge(&self, committed: Option<&Manifest>) -> Result<(), CommitError> {
        if let Some(pass) = self.point.merge(committed)?
            && let Some(told) = &self.merges_told
        {
            told(&pass);
        }
        Ok(())
    }
}

/// The checkpoints of one assignment.
struct Assigned {
    epoch: u64,
    topic_partitions: Option<i32>,
    cursors: Cursors,
    /// When the last checkpoint was sealed; `None` before the first.
    last: Option<Instant>,
    /// The last checkpoint committed, so a quiet stream does not commit the same one again.
    previous: Option<Manifest>,
    /// Checkpoints the next one supersedes, deleted once it is committed: those recovery
    /// found for the assigned partitions, then always the one before. The cursors keep every
    /// partition they ever had, so each checkpoint covers all partitions of these.
    replaced: Vec<String>,
}

impl Assigned {
    fn new(recovery: &Recovery) -> Self {
        Assigned {
            epoch: recovery.epoch,
            topic_partitions: recovery.topic_partitions,
            cursors: Cursors::restore(recovery.partitions.clone()),
            last: None,
            previous: None,
            replaced: recovery.replaced.clone(),
        }
    }
}
