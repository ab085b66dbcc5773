//! pageview: a real-time pageview pipeline.
//!
//! ```text
//! source ──▶ decode ────▶ route ─┬─ valid ─────────▶ sink: raw         (dt=/event_hour=)
//! (file,       (validate:         ├─ malformed/late ▶ sink: dlq         (payload + reason)
//!  embedded    bytes → Pageview   └─ window ────────▶ sink: aggregated  (1-min windows)
//!  generator,  | Rejection, on         (in input order)    │ finished files, encoded
//!  Kafka group) the workers)                               ▼ on the workers
//!                        commit ──▶ storage (a local folder or S3; files appear atomically)
//!                        (immediate for bounded input; Kafka: through checkpoints)
//! ```
//!
//! `pipeline` is the one driver loop over these stages, on one thread; `workers` are the
//! threads beside it that decode and encode; `command` wires them for each subcommand;
//! `tools` are what runs around them.

// Settings in.
pub mod config;
pub mod logging;

// The stages, in the order data flows.
pub mod generate;
pub mod record;
pub mod source;
pub mod validate;
pub mod decode;
pub mod future;
pub mod route;
pub mod window;
pub mod stats;
pub mod sink;
pub mod checkpoint;
pub mod commit;
pub mod storage;
pub mod pipeline;

// The edges the stages talk to.
pub mod dataset;
pub mod kafka;
pub mod metrics;
pub mod workers;

// Around the pipeline.
pub mod command;
pub mod tools;
