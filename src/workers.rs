//! The threads that decode input and encode output beside the processing thread, which
//! routes: one pool for the process, sized by `--threads`, built when first needed.

use std::fmt;
use std::num::NonZero;
use std::sync::{Arc, OnceLock};

/// A handle on the pool; clones share it. With one thread there is no pool: every job runs on
/// the thread that asks for it, in order, as if there were no workers.
#[derive(Clone)]
pub struct Workers {
    threads: usize,
    pool: Arc<OnceLock<rayon_core::ThreadPool>>,
}

impl Workers {
    pub fn new(threads: NonZero<usize>) -> Self {
        Workers {
            threads: threads.get(),
            pool: Arc::default(),
        }
    }

    /// No workers: everything on the processing thread.
    pub fn none() -> Self {
        Workers::new(NonZero::<usize>::MIN)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether jobs run beside the processing thread rather than on it.
    pub fn parallel(&self) -> bool {
        self.threads > 1
    }

    /// Runs `job` on a worker, jobs starting in the order given; on this thread, now, when
    /// there are no workers.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if !self.parallel() {
            return job();
        }
        self.pool
            .get_or_init(|| {
                rayon_core::ThreadPoolBuilder::new()
                    .num_threads(self.threads)
                    .thread_name(|i| format!("pageview-worker-{i}"))
                    .build()
                    .expect("the operating system starts a thread")
            })
            .spawn_fifo(job);
    }
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Workers({})", self.threads)
    }
}

/// The cores this process may use: its CPU affinity, and its cgroup's CPU quota (a
/// container limited to 2 CPUs on a 64-core host gets 2).
pub fn available_cores() -> NonZero<usize> {
    std::thread::available_parallelism().unwrap_or(NonZero::<usize>::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_on_the_pool_or_inline_with_one_thread() {
        let (tx, rx) = mpsc::channel();
        let inline = Workers::none();
        let here = std::thread::current().id();
        let sent = tx.clone();
        inline.spawn(move || sent.send(std::thread::current().id()).unwrap());
        assert_eq!(rx.try_recv().unwrap(), here, "ran before spawn returned");
        let pool = Workers::new(NonZero::new(2).unwrap());
        for _ in 0..4 {
            let sent = tx.clone();
            pool.clone()
                .spawn(move || sent.send(std::thread::current().id()).unwrap());
        }
        for _ in 0..4 {
            assert_ne!(rx.recv().unwrap(), here);
        }
        assert!(available_cores().get() >= 1);
    }
}
