//! Source → router → commit, until the input ends or a stop is asked for: one driver loop
//! for every source. A bounded input commits each file as soon as it is finished and makes
//! every window final at its end; a Kafka group member commits through checkpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::commit::{Commit, CommitError};
use crate::config::PipelineSettings;
use crate::kafka::KafkaError;
use crate::record::{Offset, Partition};
use crate::route::Router;
use crate::sink::{SinkError, Sinks, Tags};
use crate::source::{Assignment, HasRead, Poll, Source, SourceError, Ticked};
use crate::storage::Storage;

/// How often time-based work (rolling files by age, idle partitions, progress) should run;
/// also how long a source may wait for a record.
const TICK: Duration = Duration::from_millis(100);
/// At most this many records between clock reads, so a fast stream reads the clock rarely.
const MAX_RECORDS_PER_TICK: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Why processing stopped; either way every record read was routed and committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exhausted,
    Stopped,
}

/// How a run ended, and the router of its last assignment, for its counters.
pub struct Driven {
    pub ending: Ending,
    pub router: Option<Router>,
}

/// Builds the router for an assignment, carrying on the counters of the one before.
pub type Start<'a> = dyn FnMut(&Assignment, Option<Router>) -> Router + 'a;

/// Routes every record of `source` into the router of its current assignment, runs
/// time-based work and commits on the way, calls `progress` about once per `every`, and
/// commits one last time when the input ends or `stop` is set.
pub fn drive(
    source: &mut dyn Source,
    start: &mut Start<'_>,
    commit: &mut Commit,
    stop: &AtomicBool,
    every: Duration,
    progress: &mut dyn FnMut(&Router, &dyn Source),
) -> Result<Driven, PipelineError> {
    let mut owned: Option<Router> = None;
    // The counters of a revoked assignment, until the next one carries them on.
    let mut previous: Option<Router> = None;
    let mut cadence = Cadence::new(every);
    let ending = loop {
        let idle = match source.poll(TICK)? {
            Poll::Record(record) => {
                if let Some(router) = &mut owned {
                    router.route(record)?;
                }
                false
            }
            Poll::Idle => true,
            Poll::End => break Ending::Exhausted,
            Poll::Assigned(assignment) => {
                commit.assigned(&assignment.recovery)?;
                let carried = owned.take().or(previous.take());
                owned = Some(start(&assignment, carried));
                continue;
            }
            Poll::Revoked => {
                let_go(&mut owned, &mut previous, commit);
                continue;
            }
        };
        let Some(now) = cadence.tick(idle) else {
            continue;
        };
        let read = owned
            .as_ref()
            .map(|router| move |ends: &[(Partition, Offset)]| router.has_read(ends));
        let ticked = source.tick(now, read.as_ref().map(|f| f as HasRead<'_>))?;
        if ticked == Ticked::Revoked {
            let_go(&mut owned, &mut previous, commit);
            continue;
        }
        let stopping = stop.load(Ordering::Relaxed) || ticked == Ticked::Drained;
        if let Some(router) = &mut owned {
            router.tick(now)?;
            if !stopping {
                let offsets = commit.tick(router, now)?;
                source.committed(&offsets);
            }
        }
        if stopping {
            break Ending::Stopped;
        }
        if cadence.progress_due(now)
            && let Some(router) = owned.as_ref().or(previous.as_ref())
        {
            progress(router, source);
        }
    };
    if let Some(router) = &mut owned {
        let offsets = commit.finish(router, Instant::now())?;
        source.committed(&offsets);
    }
    Ok(Driven {
        ending,
        router: owned.or(previous),
    })
}

/// Gives up the current assignment: whatever no checkpoint holds is dropped, since the next
/// owner replays it; its counters are kept for the next assignment to carry on.
fn let_go(owned: &mut Option<Router>, previous: &mut Option<Router>, commit: &mut Commit) {
    commit.revoked();
    if let Some(router) = owned.take() {
        *previous = Some(router);
    }
}

/// The router of a bounded input, onto opened storage, its files named by `tags`.
pub fn router(pipeline: &PipelineSettings, storage: Arc<dyn Storage>, tags: Tags) -> Router {
    Router::new(
        pipeline.windows(),
        Sinks::new(storage, &pipeline.sink_config(tags)),
        pipeline.idle_timeout,
        pipeline.future_bound(),
    )
}

/// The router of assigned partitions of `topic`, windows and cursors restored from their
/// recovery; closed windows go to `partials` when the group merges them.
pub fn resumed_router(
    pipeline: &PipelineSettings,
    storage: Arc<dyn Storage>,
    topic: &str,
    partials: Option<&str>,
    assignment: &Assignment,
) -> Router {
    let tags = Tags::Topic {
        topic: topic.into(),
        partitions: assignment.partitions.clone(),
    };
    let mut sinks = pipeline.sink_config(tags);
    sinks.partials = partials.map(String::from);
    let recovery = &assignment.recovery;
    Router::resume(
        recovery.windows(
            pipeline.window,
            pipeline.watermark_delay_ms,
            &assignment.partitions,
        ),
        Sinks::new(storage, &sinks),
        pipeline.idle_timeout,
        pipeline.future_bound(),
        &assignment.partitions,
        recovery.partitions.clone(),
    )
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
