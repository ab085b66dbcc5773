//! The HTTP endpoints (`--metrics-port`): `/metrics` for Prometheus, `/healthz` (the process
//! answers), `/readyz` (it is doing its job), and the live status page at `/` with the latest
//! windows and throughput it shows at `/api/status`. On a thread of its own, so a busy or blocked
//! processing thread never delays a scrape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::tools::status::{self, Board};

/// A processing loop that has not ticked for this long is stalled: blocked on storage, or
/// stuck. The loop ticks about every 100 ms while it runs.
pub const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {address}: {source}")]
pub struct ServeError {
    address: String,
    source: std::io::Error,
}

/// Whether the process is ready, as its main loop reports it.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the loop's last tick.
    last_tick_ms: AtomicU64,
    /// Connected (storage open, and for Kafka a member of the group).
    connected: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// The main loop is alive.
    pub fn tick(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_tick_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.tick();
    }

    /// `Err` says why it is not ready.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.connected.load(Ordering::Relaxed) {
            return Err("not connected yet (storage, or the Kafka group)".into());
        }
        let since = self.started.elapsed()
            - Duration::from_millis(self.last_tick_ms.load(Ordering::Relaxed));
        if since > STALL {
            return Err(format!(
                "stalled: no progress for {:.0} s (waiting on storage or the broker)",
                since.as_secs_f64()
            ));
        }
        Ok(())
    }
}

struct Shared {
    registry: Registry,
    health: Arc<Health>,
    board: Arc<Board>,
}

/// Listens on `host:port` (port 0 picks a free one).
pub fn bind(host: &str, port: u16) -> Result<std::net::TcpListener, ServeError> {
    let address = format!("{host}:{port}");
    std::net::TcpListener::bind(&address).map_err(|source| ServeError { address, source })
}

/// Serves on `listener` from a thread of its own; returns where it listens.
pub fn start(
    listener: std::net::TcpListener,
    registry: Registry,
    health: Arc<Health>,
    board: Arc<Board>,
) -> Result<SocketAddr, ServeError> {
    let local = listener.local_addr().map_err(|source| ServeError {
        address: "the metrics listener".into(),
        source,
    })?;
    let failed = |source| ServeError {
        address: local.to_string(),
        source,
    };
    listener.set_nonblocking(true).map_err(failed)?;
    let shared = Arc::new(Shared {
        registry,
        health,
        board,
    });
    let app = Router::new()
        .route("/", get(|| async { Html(status::PAGE) }))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(failed)?
    };
    std::thread::Builder::new()
        .name("pageview-http".into())
        .spawn(move || {
            if let Err(e) = runtime.block_on(async { axum::serve(listener, app).await }) {
                tracing::error!("the metrics endpoint stopped: {e}");
            }
        })
        .map_err(failed)?;
    Ok(local)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::encode(&shared.registry),
    )
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        shared.board.json(),
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match shared.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_connected_and_while_ticking() {
        let health = Health::default();
        assert!(health.readiness().is_err());
        health.set_connected(true);
        assert_eq!(health.readiness(), Ok(()));
        let stalled = Health {
            started: Instant::now() - STALL - Duration::from_secs(1),
            last_tick_ms: AtomicU64::new(0),
            connected: AtomicBool::new(true),
        };
        let why = stalled.readiness().unwrap_err();
        assert!(why.contains("stalled"), "{why}");
    }
}
