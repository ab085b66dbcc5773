//! Source → router, until the input ends or a stop is asked for; then everything is flushed.
//! Files and streams publish each file as soon as it is finished; Kafka publishes through
//! checkpoints ([`consume`], which [`consume_group`] wires to a group, storage and the
//! observed metrics).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::checkpoint::CheckpointError;
use crate::commit::{Checkpointed, Commit, CommitError, CommitPoint, Manifests};
use crate::config::PipelineSettings;
use crate::kafka::KafkaError;
use crate::observe::{Observed, Progress};
use crate::route::Router;
use crate::sink::{SinkError, Sinks, Tags};
use crate::source::kafka::{
    Assignment, ConsumerSettings, GroupConsumer, HasRead, Polled, Rebalanced,
};
use crate::source::{Poll, Source, SourceError};
use crate::storage::Storage;

/// How often time-based work (rolling files by age, idle partitions, progress) should run;
/// also how long a source may wait for a record.
const TICK: Duration = Duration::from_millis(100);
/// At most this many records between clock reads, so a fast stream reads the clock rarely.
const MAX_RECORDS_PER_TICK: u32 = 4096;
/// How often a group member without partitions says what it waits for.
const UNASSIGNED_NOTE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("the Kafka consumer stopped for good: {0}")]
    Consumer(rdkafka::error::KafkaError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// (partition, records not yet read) of each partition a consumer fetches.
pub type Lag = [(i32, i64)];

/// Why processing stopped; either way every record read was routed and published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exhausted,
    Stopped,
}

/// Routes every record of `source`, runs time-based work on the way, calls `progress` (with
/// the bytes read so far) about once per `every`, and at the end closes every window and
/// publishes every file.
pub fn drive(
    source: &mut dyn Source,
    router: &mut Router,
    stop: &AtomicBool,
    every: Duration,
    progress: &mut dyn FnMut(&Router, u64),
) -> Result<Ending, PipelineError> {
    let mut cadence = Cadence::new(every);
    let commit = &mut Commit::Immediate;
    let ending = loop {
        let idle = match source.poll(TICK)? {
            Poll::Record(record) => {
                router.route(record)?;
                false
            }
            Poll::Idle => true,
            Poll::End => break Ending::Exhausted,
        };
        let Some(now) = cadence.tick(idle) else {
            continue;
        };
        if stop.load(Ordering::Relaxed) {
            break Ending::Stopped;
        }
        router.tick(now)?;
        commit.tick(router, now)?;
        if cadence.progress_due(now) {
            progress(router, source.bytes_read());
        }
    };
    commit.finish(router, Instant::now())?;
    Ok(ending)
}

/// When [`consume`] stops.
pub struct Until<'a> {
    /// Asked to stop (a signal).
    pub stop: &'a AtomicBool,
    /// Once set, the consumer reads its partitions up to where they end at that moment, then
    /// stops: for a run whose producer has finished.
    pub drain: &'a AtomicBool,
}

/// Consumes a Kafka group until told to stop, checkpointing as it goes; then a last
/// checkpoint publishes every file. Open windows stay open: they are in the manifest, and the
/// next run continues them. `start` builds the router for each assignment, carrying the
/// counters of the one before.
pub fn consume(
    group: &mut GroupConsumer,
    start: &mut dyn FnMut(Assignment, Option<Router>) -> Router,
    commit: &mut Commit,
    until: &Until<'_>,
    every: Duration,
    progress: &mut dyn FnMut(&Router, &Lag),
) -> Result<Option<Router>, PipelineError> {
    let mut source = group.source();
    let mut owned: Option<Router> = None;
    // The counters of a revoked assignment, until the next one carries them on.
    let mut previous: Option<Router> = None;
    let mut cadence = Cadence::new(every);
    // Where the partitions ended when a drain was asked for.
    let mut ends: Option<Vec<(i32, i64)>> = None;
    let mut quiet = Quiet::new(
        stall_after(group.settings().session_timeout),
        Instant::now(),
    );
    // When to say again what a member without partitions waits for.
    let mut unassigned_note = Instant::now() + UNASSIGNED_NOTE_EVERY;
    loop {
        let idle = match source.poll(TICK) {
            Polled::Record(record) => {
                quiet.heard();
                let Some(o) = &mut owned else {
                    continue;
                };
                o.route(record)?;
                false
            }
            Polled::Rebalanced(Rebalanced::Revoked) => {
                let_go(&mut owned, &mut previous, commit);
                continue;
            }
            Polled::Rebalanced(Rebalanced::Assigned(assignment)) => {
                unassigned_note = Instant::now() + UNASSIGNED_NOTE_EVERY;
                commit.assigned(&assignment.recovery)?;
                let carried = owned.take().or(previous.take());
                owned = Some(start(assignment, carried));
                continue;
            }
            Polled::Rebalanced(Rebalanced::Failed(e)) => return Err(e.into()),
            Polled::Fatal(e) if group.fenced_by_itself(&e) => {
                tracing::warn!(
                    "kafka: fenced after losing the broker, by this member's own rejoin; joining again"
                );
                let_go(&mut owned, &mut previous, commit);
                drop(source);
                group.rejoin()?;
                source = group.source();
                continue;
            }
            Polled::Fatal(e) => return Err(PipelineError::Consumer(e)),
            Polled::Idle => true,
        };
        let Some(now) = cadence.tick(idle) else {
            continue;
        };
        let has_read = owned
            .as_ref()
            .map(|o| move |ends: &[(i32, i64)]| o.has_read(ends));
        if quiet.long(now) && group.stuck(has_read.as_ref().map(|f| f as HasRead<'_>)) {
            tracing::warn!(
                "kafka: nothing consumed for {:?} although the broker has records for this member; joining again with a new client",
                quiet.after
            );
            let_go(&mut owned, &mut previous, commit);
            drop(source);
            group.rejoin()?;
            source = group.source();
            continue;
        }
        if owned.is_none() && now >= unassigned_note {
            tracing::info!("{}", group.waiting_for());
            unassigned_note = now + UNASSIGNED_NOTE_EVERY;
        }
        if ends.is_none() && until.drain.load(Ordering::Relaxed) {
            // Unanswered (the broker is away): asked again at the next tick.
            ends = group.ends().ok();
        }
        let drained = ends
            .as_deref()
            .zip(owned.as_ref())
            .is_some_and(|(ends, o)| o.has_read(ends));
        let stopping = until.stop.load(Ordering::Relaxed) || drained;
        if let Some(router) = &mut owned {
            router.tick(now)?;
            let offsets = if stopping {
                commit.finish(router, now)?
            } else {
                commit.tick(router, now)?
            };
            group.commit(&offsets);
        }
        if stopping {
            return Ok(owned.or(previous));
        }
        if cadence.progress_due(now)
            && let Some(router) = owned.as_ref().or(previous.as_ref())
        {
            progress(router, &group.lag());
        }
    }
}

/// Joins the group and processes what it is assigned into `storage` until `until` says
/// stop; the router of the last assignment, for its counters.
pub fn consume_group(
    settings: &ConsumerSettings,
    pipeline: &PipelineSettings,
    storage: Arc<dyn Storage>,
    until: &Until<'_>,
    observed: Observed,
) -> Result<Option<Router>, PipelineError> {
    let point: Arc<dyn CommitPoint> = Arc::new(Manifests::new(
        storage.clone(),
        &pipeline.buckets.checkpoints,
        &settings.group,
    ));
    let cluster = &settings.cluster;
    tracing::info!(
        "connecting to Kafka at {} ({}) for {}",
        cluster.servers,
        cluster.security.describe(),
        settings.topic
    );
    let mut group = GroupConsumer::join(settings, point.clone(), until.stop)?;
    // A group member runs for good: readers' globs over the DLQ must match before its first
    // dead letter, not only after it stops. Only once joined: a member that never reaches
    // its cluster writes nothing.
    Sinks::new(
        storage.clone(),
        &pipeline.sink_config(Tags::Fixed("dlq".into())),
    )
    .ensure_dlq_file()?;
    let member = settings.member_name();
    tracing::info!(
        "consuming {} at {} as {member} in group {}; checkpoints every {} ms",
        settings.topic,
        cluster.servers,
        settings.group,
        settings.checkpoint_interval.as_millis()
    );
    let progress = Progress::new("processing", observed);
    let mut start = |assignment: Assignment, before: Option<Router>| {
        progress.observed.health.set_connected(true);
        let recovery = &assignment.recovery;
        tracing::info!(
            "assigned partitions {:?} of {}",
            assignment.partitions,
            settings.topic
        );
        let tags = Tags::Topic {
            topic: settings.topic.clone(),
            partitions: assignment.partitions.clone(),
        };
        let sinks = Sinks::new(storage.clone(), &pipeline.sink_config(tags));
        let windows = recovery.windows(pipeline.window, pipeline.watermark_delay_ms);
        let mut router = Router::resume(
            windows,
            sinks,
            pipeline.idle_timeout,
            &assignment.partitions,
            recovery.partitions.clone(),
        );
        if let Some(before) = before {
            router.continue_stats(before);
        }
        router
    };
    let mut checkpointed = Checkpointed::new(
        point,
        &member,
        &settings.topic,
        settings.checkpoint_interval,
    );
    if let Some(metrics) = progress.observed.metrics.clone() {
        checkpointed = checkpointed.timed_by(move |took| metrics.checkpointed(took));
    }
    let mut commit = Commit::Checkpointed(Box::new(checkpointed));
    let router = consume(
        &mut group,
        &mut start,
        &mut commit,
        until,
        progress.every,
        &mut |r, lag| {
            progress.observed.observe_lag(lag);
            progress.show(r, 0)
        },
    )?;
    if let Some(router) = &router {
        progress.done(router);
    }
    group.leave();
    Ok(router)
}

/// Gives up the current assignment, after a revoke or before a new client joins: whatever is
/// not in a manifest is dropped, since the next owner replays it; its counters are kept for
/// the next assignment to carry on.
fn let_go(owned: &mut Option<Router>, previous: &mut Option<Router>, commit: &mut Commit) {
    commit.revoked();
    if let Some(router) = owned.take() {
        *previous = Some(router);
    }
}

/// How long a consumer may deliver nothing before [`GroupConsumer::stuck`] is asked: long
/// enough for the client to ride out an outage or a rebalance by itself.
fn stall_after(session_timeout: Duration) -> Duration {
    (2 * session_timeout).max(Duration::from_secs(30))
}

/// Time since the consumer last delivered a record.
struct Quiet {
    after: Duration,
    since: Instant,
    heard: bool,
}

impl Quiet {
    fn new(after: Duration, now: Instant) -> Self {
        Quiet {
            after,
            since: now,
            heard: false,
        }
    }

    /// A record came: one store, since it is called for every record.
    fn heard(&mut self) {
        self.heard = true;
    }

    /// Whether nothing came for `after` up to `now`; if so the clock starts again, so a
    /// quiet consumer is looked at once per `after`.
    fn long(&mut self, now: Instant) -> bool {
        if std::mem::take(&mut self.heard) {
            self.since = now;
            return false;
        }
        if now.duration_since(self.since) < self.after {
            return false;
        }
        self.since = now;
        true
    }
}

/// When time-based work runs: about every [`TICK`], reading the clock only every so many
/// records on a fast stream.
struct Cadence {
    last_tick: Instant,
    /// Records between clock reads, adapted to the rate so that ticks come about every TICK.
    per_tick: u32,
    until_tick: u32,
    every: Duration,
    next_progress: Instant,
}

impl Cadence {
    fn new(every: Duration) -> Self {
        let now = Instant::now();
        Cadence {
            last_tick: now,
            per_tick: 1,
            until_tick: 1,
            every,
            next_progress: now + every,
        }
    }

    /// Called once per poll; the time when a tick is due, `None` otherwise.
    fn tick(&mut self, idle: bool) -> Option<Instant> {
        self.until_tick -= 1;
        if !idle && self.until_tick > 0 {
            return None;
        }
        let now = Instant::now();
        let since = now.duration_since(self.last_tick);
        self.per_tick = next_per_tick(self.per_tick, since);
        self.until_tick = self.per_tick;
        if since < TICK && !idle {
            return None;
        }
        self.last_tick = now;
        Some(now)
    }

    fn progress_due(&mut self, now: Instant) -> bool {
        let due = now >= self.next_progress;
        if due {
            self.next_progress = now + self.every;
        }
        due
    }
}

/// Doubles the records between clock reads while ticks come faster than [`TICK`], halves
/// them when slower: a stream of any rate runs time-based work a few times a second while
/// a fast one reads the clock only every few thousand records.
fn next_per_tick(per_tick: u32, since_last: Duration) -> u32 {
    if since_last < TICK {
        (per_tick * 2).min(MAX_RECORDS_PER_TICK)
    } else {
        (per_tick / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_consumer_is_looked_at_once_per_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut quiet = Quiet::new(s(30), t0);
        assert!(!quiet.long(t0 + s(29)));
        assert!(quiet.long(t0 + s(30)));
        assert!(!quiet.long(t0 + s(31)), "the clock started again");
        assert!(quiet.long(t0 + s(60)));
        quiet.heard();
        assert!(!quiet.long(t0 + s(95)), "a record came since the last look");
        assert!(!quiet.long(t0 + s(124)));
        assert!(quiet.long(t0 + s(125)));
    }

    #[test]
    fn a_stall_is_suspected_only_after_the_session_could_have_recovered() {
        assert_eq!(stall_after(Duration::from_secs(6)), Duration::from_secs(30));
        assert_eq!(
            stall_after(Duration::from_secs(45)),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn clock_reads_adapt_to_the_rate() {
        let fast = Duration::from_millis(1);
        let slow = Duration::from_millis(300);
        let mut n = 1;
        for _ in 0..20 {
            n = next_per_tick(n, fast);
        }
        assert_eq!(n, MAX_RECORDS_PER_TICK);
        for _ in 0..20 {
            n = next_per_tick(n, slow);
        }
        assert_eq!(n, 1);
    }
}
