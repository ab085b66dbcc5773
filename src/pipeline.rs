//! Source → router, until the input ends or a stop is asked for; then everything is flushed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::route::Router;
use crate::sink::SinkError;
use crate::source::{Poll, Source, SourceError};

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
}

/// Why processing stopped; either way every record read was routed and published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exhausted,
    Stopped,
}

/// Routes every record of `source`, runs time-based work on the way, calls `progress` about
/// once per `every`, and at the end closes every window and publishes every file.
pub fn drive(
    source: &mut dyn Source,
    router: &mut Router,
    stop: &AtomicBool,
    every: Duration,
    progress: &mut dyn FnMut(&Router),
) -> Result<Ending, PipelineError> {
    let mut next_progress = Instant::now() + every;
    let mut last_tick = Instant::now();
    // Records between clock reads, adapted to the rate so that ticks come about every TICK.
    let mut per_tick = 1;
    let mut until_tick = per_tick;
    let ending = loop {
        let idle = match source.poll(TICK)? {
            Poll::Record(record) => {
                router.route(record)?;
                false
            }
            Poll::Idle => true,
            Poll::End => break Ending::Exhausted,
        };
        until_tick -= 1;
        if idle || until_tick == 0 {
            let now = Instant::now();
            per_tick = next_per_tick(per_tick, now.duration_since(last_tick));
            until_tick = per_tick;
            if now.duration_since(last_tick) < TICK && !idle {
                continue;
            }
            last_tick = now;
            if stop.load(Ordering::Relaxed) {
                break Ending::Stopped;
            }
            router.tick(now)?;
            if now >= next_progress {
                progress(router);
                next_progress = now + every;
            }
        }
    };
    router.finish()?;
    Ok(ending)
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
