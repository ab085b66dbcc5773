//! Routed rows → Parquet files → storage, one module per dataset.

mod aggregated;
mod dlq;
mod encoder;
pub mod naming;
mod outputs;
mod raw;
mod rolling;

pub use dlq::DeadLetter;
pub use outputs::{Dataset, Finished, SinkConfig, SinkError, Sinks, Tags, WrittenFile};

/// How `dataset`'s files are encoded, for a file written outside the sinks: a compaction's
/// rewrite holds the same columns, encodings and statistics as the files it replaces.
pub fn writer_properties(
    dataset: Dataset,
    compression: parquet::basic::Compression,
) -> parquet::file::properties::WriterProperties {
    match dataset {
        Dataset::Raw => rolling::properties::<raw::RawRows>(compression),
        Dataset::Aggregated => rolling::properties::<aggregated::AggregatedRows>(compression),
        Dataset::Dlq => rolling::properties::<dlq::DlqRows>(compression),
    }
}
