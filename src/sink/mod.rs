//! Routed rows → Parquet files → storage, one module per dataset.

mod aggregated;
mod dlq;
pub mod naming;
mod outputs;
mod raw;
mod rolling;

pub use dlq::DeadLetter;
pub use outputs::{Dataset, Finished, SinkConfig, SinkError, Sinks, Tags, WrittenFile};
