//! What each dataset's table holds: its columns and partition columns, checked on opening,
//! and the log entry of a published file.

use std::collections::HashMap;

use arrow_schema::{DataType as ArrowType, TimeUnit};
use deltalake::kernel::{Add, DataType, StructField};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};

use super::{TableError, failed};
use crate::sink::{Dataset, WrittenFile};

/// The partition columns of each dataset's table, in path order: what its folders are named
/// by.
pub(super) fn partition_columns(dataset: Dataset) -> &'static [&'static str] {
    match dataset {
        Dataset::Raw => &["dt", "event_hour"],
        Dataset::Aggregated => &["dt"],
        Dataset::Dlq => &[],
    }
}

/// The table at `location`, created empty with the dataset's columns if there is none.
pub(super) async fn open_or_create(
    location: &str,
    dataset: Dataset,
) -> Result<DeltaTable, DeltaTableError> {
    CreateBuilder::new()
        .with_location(location)
        .with_save_mode(SaveMode::Ignore)
        .with_columns(table_fields(dataset))
        .with_partition_columns(partition_columns(dataset).iter().copied())
        .await
}

/// The columns of a dataset's table: its files' columns, then the partition columns
/// (strings, as in the folder names).
fn table_fields(dataset: Dataset) -> Vec<StructField> {
    let files = dataset.schema();
    let columns = files
        .fields()
        .iter()
        .map(|f| StructField::new(f.name(), delta_type(f.data_type()), f.is_nullable()));
    let partitions = partition_columns(dataset)
        .iter()
        .map(|c| StructField::new(*c, DataType::STRING, false));
    columns.chain(partitions).collect()
}

/// Refuses an existing table that is not this dataset's: committing our files to it would
/// corrupt it.
pub(super) fn check_columns(
    table: &DeltaTable,
    location: &str,
    dataset: Dataset,
) -> Result<(), TableError> {
    let state = table.snapshot().map_err(failed(location))?;
    let found: Vec<String> = state.schema().fields().map(|f| f.name().clone()).collect();
    let partitions = state.metadata().partition_columns().to_vec();
    let wanted: Vec<String> = table_fields(dataset)
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let wanted_partitions: Vec<String> = partition_columns(dataset)
        .iter()
        .map(|c| c.to_string())
        .collect();
    if found == wanted && partitions == wanted_partitions {
        return Ok(());
    }
    let layout = |columns: &[String], partitions: &[String]| {
        format!("columns {columns:?} partitioned by {partitions:?}")
    };
    Err(TableError::Foreign {
        table: location.into(),
        dataset,
        found: layout(&found, &partitions),
        wanted: layout(&wanted, &wanted_partitions),
    })
}

/// The Delta type of one of the datasets' Parquet columns.
fn delta_type(arrow: &ArrowType) -> DataType {
    match arrow {
        ArrowType::Int64 => DataType::LONG,
        ArrowType::Int32 => DataType::INTEGER,
        ArrowType::Utf8 => DataType::STRING,
        ArrowType::Binary => DataType::BINARY,
        ArrowType::Timestamp(TimeUnit::Millisecond, Some(_)) => DataType::TIMESTAMP,
        other => unreachable!("no dataset has a column of type {other}"),
    }
}

/// The log's entry for a published file: its path in the table, partition values from its
/// folders, size and row count.
pub(super) fn add(bucket: &str, file: &WrittenFile, now_ms: i64) -> Add {
    let path = file
        .key
        .strip_prefix(bucket)
        .and_then(|p| p.strip_prefix('/'))
        .expect("a dataset's keys are in its bucket");
    let partition_values: HashMap<String, Option<String>> = path
        .split('/')
        .filter_map(|segment| segment.split_once('='))
        .map(|(column, value)| (column.to_string(), Some(value.to_string())))
        .collect();
    Add {
        path: path.to_string(),
        partition_values,
        size: file.bytes as i64,
        modification_time: now_ms,
        data_change: true,
        stats: Some(serde_json::json!({ "numRecords": file.rows }).to_string()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}
