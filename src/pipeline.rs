//! Source → router, until the input ends or a stop is asked for; then everything is flushed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::route::Router;
use crate::sink::SinkError;
use crate::source::{Poll, Source, SourceError};

/// How long a source may wait for a record before time-based work runs.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Records between clock reads: often enough for timely rolls, rare enough to cost nothing.
const RECORDS_PER_TICK: u32 = 4096;

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
    let mut until_tick = RECORDS_PER_TICK;
    let ending = loop {
        let idle = match source.poll(IDLE_WAIT)? {
            Poll::Record(record) => {
                router.route(record)?;
                false
            }
            Poll::Idle => true,
            Poll::End => break Ending::Exhausted,
        };
        until_tick -= 1;
        if idle || until_tick == 0 {
            until_tick = RECORDS_PER_TICK;
            if stop.load(Ordering::Relaxed) {
                break Ending::Stopped;
            }
            let now = Instant::now();
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
