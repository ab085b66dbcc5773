//! Rewriting a table's small files into big ones, and expiring old files, each in one
//! commit that retries onto newer versions.

use std::collections::HashSet;

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::kernel::{Action, Remove};
use deltalake::protocol::DeltaOperation;

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::maintenance::{expire_files, table_files};
use super::schema::add;
use super::{TableError, Tables, failed};
use crate::commit::compaction::{self, Merge, Part, Policy};
use crate::sink::{Dataset, WrittenFile, naming, writer_properties};
use crate::storage::{Listed, Storage};

impl Tables {
    /// Rewrites the small files of `dataset`'s table into files of up to `target` bytes
    /// in every partition, in one commit. (files removed, files added)
    pub fn compact(
        &mut self,
        dataset: Dataset,
        storage: &dyn Storage,
        compression: Compression,
        target: u64,
    ) -> Result<(usize, usize), TableError> {
        let merges = self.plan_compaction(dataset, target, Policy::All)?;
        self.commit_merges(dataset, &merges, storage, compression, target)?;
        let removed = merges.iter().map(|m| m.inputs.len()).sum();
        Ok((removed, merges.len()))
    }

    /// Which of the small files of `dataset`'s newest version to rewrite together.
    pub(in crate::commit) fn plan_compaction(
        &mut self,
        dataset: Dataset,
        target: u64,
        policy: Policy,
    ) -> Result<Vec<Merge>, TableError> {
        let parts: Vec<Part> = self
            .newest_files(dataset)?
            .into_iter()
            .map(|f| Part {
                partition: f
                    .path
                    .rsplit_once('/')
                    .map_or(String::new(), |(folder, _)| folder.to_string()),
                path: f.path,
                bytes: f.bytes,
            })
            .collect();
        Ok(compaction::plan(&parts, target, policy))
    }

    /// Rewrites each of `merges` into one file encoded as the sinks encode them, then makes
    /// one commit that removes their files and adds the new ones, neither a data change:
    /// readers see the same rows, and one reading the older version still finds its files
    /// (vacuum deletes them after its retention). Nothing is committed when any fails, or
    /// when another writer removed one of the files since (a compaction of its own). The
    /// files written, in the order of `merges`.
    pub(in crate::commit) fn commit_merges(
        &mut self,
        dataset: Dataset,
        merges: &[Merge],
        storage: &dyn Storage,
        compression: Compression,
        target: u64,
    ) -> Result<Vec<WrittenFile>, TableError> {
        if merges.is_empty() {
            return Ok(Vec::new());
        }
        let table = &self.tables[dataset.index()];
        let properties = writer_properties(dataset, compression);
        let now_ms = crate::generate::now_ms();
        let run = format!("{:08x}", rand::random::<u32>());
        let mut actions = Vec::new();
        let mut files = Vec::with_capacity(merges.len());
        for (n, merge) in merges.iter().enumerate() {
            let name = format!("part-compacted-{run}-{n:05}.parquet");
            let key = naming::key(&table.bucket, &merge.partition, &name);
            let written = rewrite(storage, dataset, &table.bucket, merge, &key, &properties)
                .map_err(|problem| TableError::Compact {
                    table: table.location.clone(),
                    problem,
                })?;
            let mut added = add(&table.bucket, &written, now_ms);
            added.data_change = false;
            for input in &merge.inputs {
                actions.push(Action::Remove(Remove {
                    path: input.path.clone(),
                    data_change: false,
                    deletion_timestamp: Some(now_ms),
                    extended_file_metadata: Some(true),
                    partition_values: Some(added.partition_values.clone()),
                    size: Some(input.bytes as i64),
                    tags: None,
                    deletion_vector: None,
                    base_row_id: None,
                    default_row_commit_version: None,
                }));
            }
            actions.push(Action::Add(added));
            files.push(written);
        }
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: target as i64,
        };
        // delta-rs's conflict checker lets two removals of one file with `dataChange = false`
        // both commit, so two compactions of the same files would each add their rows again.
        // Hence a commit of our own: onto the version whose files were just checked, or not at
        // all (no retries: the next version may be one that removed an input).
        let inputs: Vec<&str> = merges
            .iter()
            .flat_map(|m| m.inputs.iter().map(|p| p.path.as_str()))
            .collect();
        let mut attempt = 1;
        loop {
            let present: HashSet<String> = self
                .newest_files(dataset)?
                .into_iter()
                .map(|f| f.path)
                .collect();
            if let Some(gone) = inputs.iter().find(|p| !present.contains(**p)) {
                return Err(TableError::Compact {
                    table: self.location(dataset).into(),
                    problem: format!(
                        "{gone} was removed meanwhile (by another compaction, or as an expired \
                         dead letter); nothing is committed"
                    ),
                });
            }
            let once = CommitProperties::default().with_max_retries(0);
            match self.commit_actions(dataset, actions.clone(), operation.clone(), once) {
                Err(e) if overtaken(&e) && attempt < COMMIT_ATTEMPTS => attempt += 1,
                committed => return committed.map(|()| files),
            }
        }
    }

    /// Removes from `dataset`'s newest version the files added before `before_ms`; how many.
    pub(in crate::commit) fn expire(
        &mut self,
        dataset: Dataset,
        before_ms: i64,
    ) -> Result<usize, TableError> {
        self.refresh(dataset)?;
        let table = &mut self.tables[dataset.index()];
        self.runtime
            .block_on(expire_files(&mut table.table, before_ms))
            .map_err(failed(&table.location))
    }

    /// The data files of `dataset`'s newest version.
    fn newest_files(&mut self, dataset: Dataset) -> Result<Vec<Listed>, TableError> {
        self.refresh(dataset)?;
        let table = &self.tables[dataset.index()];
        self.runtime
            .block_on(table_files(&table.table))
            .map_err(failed(&table.location))
    }
}

/// How often a compaction's commit is tried onto a newer version before the pass gives up:
/// a processor commits to each table about once per checkpoint, far less often.
const COMMIT_ATTEMPTS: u32 = 20;

/// Whether a commit that may not be retried by delta-rs failed only because another writer
/// committed a version since its snapshot.
fn overtaken(error: &TableError) -> bool {
    matches!(
        error,
        TableError::Delta { source, .. } if matches!(
            source.as_ref(),
            DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
            }
        )
    )
}

/// The files of `merge` read back and written as one file at `key`, published there (where
/// no reader of the table looks until the compaction's commit names it).
fn rewrite(
    storage: &dyn Storage,
    dataset: Dataset,
    bucket: &str,
    merge: &Merge,
    key: &str,
    properties: &WriterProperties,
) -> Result<WrittenFile, String> {
    let schema = dataset.schema();
    let file = storage.create(bucket).map_err(|e| e.to_string())?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties.clone()))
        .map_err(|e| e.to_string())?;
    let mut rows = 0;
    for input in &merge.inputs {
        let at = naming::key(bucket, "", &input.path);
        let bytes = storage
            .get(&at)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{at}, named by the table, is missing"))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .and_then(|b| b.build())
            .map_err(|e| format!("{at}: {e}"))?;
        for batch in reader {
            let batch = batch.map_err(|e| format!("{at}: {e}"))?;
            let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                .map_err(|e| format!("{at} holds other columns: {e}"))?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(|e| e.to_string())?;
        }
    }
    let file = writer.into_inner().map_err(|e| e.to_string())?;
    let bytes = file.publish(key).map_err(|e| e.to_string())?;
    Ok(WrittenFile {
        dataset,
        key: key.into(),
        rows,
        bytes,
    })
}
