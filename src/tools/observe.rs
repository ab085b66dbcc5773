//! What a running command shows of itself: a progress line on stderr, and, when a port is
//! given, the status page, `/metrics` and health endpoints, brought up to date each tick.

use std::cell::Cell;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::MetricsArgs;
use crate::generate::now_ms;
use crate::metrics::{self, GeneratorMetrics, PipelineMetrics};
use crate::record::Partition;
use crate::route::Router;
use crate::storage::RequestObserver;
use crate::tools::report;
use crate::tools::serve::{self, Health, ServeError};
use crate::tools::status::Board;

/// Live progress on stderr, rewritten in place on a terminal and a plain line now and then
/// otherwise; each tick also brings the metrics and the health up to date. Through an input
/// of known size it shows how far, as a bar on a terminal, and the time left.
pub struct Progress {
    label: &'static str,
    terminal: bool,
    pub every: Duration,
    print_every: Duration,
    /// The size of the input, when it is a file.
    input_bytes: Option<u64>,
    /// Records, bytes read and time at the previous line, for the rates since then.
    last: Cell<(u64, u64, Instant)>,
    pub observed: Observed,
}

/// Cells of the progress bar on a terminal.
const BAR_WIDTH: usize = 20;

impl Progress {
    pub fn new(label: &'static str, observed: Observed) -> Self {
        let terminal = io::stderr().is_terminal();
        Progress {
            label,
            terminal,
            every: Duration::from_secs(1),
            print_every: if terminal {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            },
            input_bytes: None,
            last: Cell::new((0, 0, Instant::now())),
            observed,
        }
    }

    /// Through an input of `bytes`.
    pub fn of_input(mut self, bytes: Option<u64>) -> Self {
        self.input_bytes = bytes;
        self
    }

    /// `bytes`: how much of the input has been read.
    pub fn show(&self, router: &Router, bytes: u64) {
        self.observed.observe(router);
        let (records, bytes_before, at) = self.last.get();
        if at.elapsed() < self.print_every {
            return;
        }
        let stats = router.stats();
        self.last.set((stats.records, bytes, Instant::now()));
        let secs = at.elapsed().as_secs_f64().max(1e-9);
        let rate = (stats.records - records) as f64 / secs;
        let mut line = String::new();
        if let Some(total) = self.input_bytes {
            let width = if self.terminal { BAR_WIDTH } else { 0 };
            let byte_rate = bytes.saturating_sub(bytes_before) as f64 / secs;
            let of = format!("{:.1} MB", total as f64 / 1e6);
            line = report::progress(bytes, total, &of, byte_rate, width) + " | ";
        }
        line.push_str(&report::live_line(stats, rate));
        let mut err = io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{}: {line}", self.label);
        } else {
            let _ = writeln!(err, "{}: {line}", self.label);
        }
    }

    pub fn done(&self, router: &Router) {
        self.observed.observe(router);
        if self.terminal {
            eprintln!();
        }
    }
}

/// The endpoints' view of a processor: its metrics, windows and health, when served.
pub struct Observed {
    pub metrics: Option<Arc<PipelineMetrics>>,
    board: Arc<Board>,
    pub health: Arc<Health>,
}

impl Observed {
    pub fn observe_lag(&self, lag: &[(Partition, i64)]) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_lag(lag);
        }
    }

    pub fn observe(&self, router: &Router) {
        if let Some(metrics) = &self.metrics {
            metrics.observe(router.stats(), router.watermarks(), now_ms());
            let records = router.stats().records;
            self.board
                .show(router.recent_windows(), records, Instant::now());
        }
        self.health.tick();
    }
}

/// Which metrics a command exposes.
pub struct Exposed {
    pipeline: Option<Arc<PipelineMetrics>>,
    pub generator: Option<Arc<GeneratorMetrics>>,
    board: Arc<Board>,
    pub health: Arc<Health>,
}

impl Exposed {
    /// What storage tells of its requests: the processor's metrics, when served.
    pub fn storage_observer(&self) -> Option<Arc<dyn RequestObserver>> {
        let metrics = self.pipeline.clone()?;
        Some(metrics)
    }

    pub fn observed(&self) -> Observed {
        Observed {
            metrics: self.pipeline.clone(),
            board: self.board.clone(),
            health: self.health.clone(),
        }
    }
}

/// The port `run` serves on when none is given; a free one when it is taken.
pub const RUN_METRICS_PORT: u16 = 9464;

/// Starts the status page, `/metrics`, `/healthz` and `/readyz` when a port is given (or
/// `default_port`), with the processor's and the generator's metrics as asked, and says
/// where. Without a port nothing is registered, so nothing is counted that no one can read.
pub fn expose(
    args: &MetricsArgs,
    default_port: Option<u16>,
    pipeline: bool,
    generator: bool,
) -> Result<Exposed, ServeError> {
    let host = &args.metrics_host;
    let listener = match (args.metrics_port, default_port) {
        (Some(port), _) => Some(serve::bind(host, port)?),
        (None, Some(port)) => Some(serve::bind(host, port).or_else(|_| {
            tracing::warn!("metrics: port {port} is taken; picking a free one");
            serve::bind(host, 0)
        })?),
        (None, None) => None,
    };
    let mut registry = metrics::registry();
    let serving = listener.is_some();
    let exposed = Exposed {
        pipeline: (serving && pipeline).then(|| PipelineMetrics::register(&mut registry)),
        generator: (serving && generator).then(|| GeneratorMetrics::register(&mut registry)),
        board: Arc::default(),
        health: Arc::default(),
    };
    if let Some(listener) = listener {
        let address = serve::start(
            listener,
            registry,
            exposed.health.clone(),
            exposed.board.clone(),
        )?;
        // Listening on every interface: this machine's own name is the one to open.
        let address = if address.ip().is_unspecified() {
            format!("localhost:{}", address.port())
        } else {
            address.to_string()
        };
        tracing::info!(
            "status page at http://{address}/ (metrics: /metrics, health: /healthz, /readyz)"
        );
    }
    Ok(exposed)
}
