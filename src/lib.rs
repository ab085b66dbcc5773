//! pageview: a real-time pageview pipeline.
//!
//! ```text
//! source ──▶ validate ──▶ route ─┬─ valid ─────────▶ sink: raw         (dt=/event_hour=)
//! (file,       (bytes →           ├─ malformed/late ▶ sink: dlq         (payload + reason)
//!  embedded    Pageview |         └─ window ────────▶ sink: aggregated  (1-min windows)
//!  generator,  Rejection)                                  │
//!  Kafka group)                                            ▼
//!                   checkpoint ──▶ storage (local folder; files appear atomically)
//!                   (Kafka only: files are published once a manifest names them)
//! ```
//!
//! Modules in flow order; `config` and `storage` are the edges, `pipeline` drives the loop.

pub mod bench;
pub mod checkpoint;
pub mod command;
pub mod commit;
pub mod config;
pub mod generate;
pub mod inspect;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod pipeline;
pub mod record;
pub mod report;
pub mod route;
pub mod serve;
pub mod sink;
pub mod source;
pub mod stats;
pub mod status;
pub mod storage;
pub mod validate;
pub mod window;
