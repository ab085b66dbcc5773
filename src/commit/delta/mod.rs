//! The datasets as Delta Lake tables (`--table-format delta`): each at the root of its
//! bucket, its data files the pipeline's own Parquet files in the same `dt=`/`event_hour=`
//! folders, made part of the table by a commit to the table's log through delta-rs. A file
//! is in the table once the commit naming it is in the log, and readers of the table see
//! nothing of a commit until it is whole.
//!
//! `root` is where the tables are (a folder, or S3 through the pipeline's own clients),
//! `schema` what each dataset's table holds, `compact` the rewrites of small files and the
//! expiry of old ones, `merges` the group's merged windows, `maintenance` what the commands
//! run on a table they open (vacuum, expire, listing).

mod compact;
mod maintenance;
mod merges;
mod root;
mod schema;

pub use maintenance::{added_before, current_files, expire, has_table, txn_version, vacuum};
pub(super) use merges::{TableMerges, merge_app};
pub use root::TableRoot;

use std::collections::HashMap;

use deltalake::kernel::transaction::{
    CommitBuilder, CommitConflictError, CommitProperties, TransactionError,
};
use deltalake::kernel::{Action, Transaction};
use deltalake::logstore::LogStore;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};

use crate::sink::{Dataset, WrittenFile};
use crate::storage::Buckets;
use root::PipelineS3;
use schema::{add, check_columns, open_or_create, partition_columns};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("Delta table {table}: {source}")]
    Delta {
        table: String,
        source: Box<DeltaTableError>,
    },
    #[error("cannot start the Delta Lake client: {0}")]
    Runtime(std::io::Error),
    /// Another processor committed a partition this one believed it owned.
    #[error(
        "partition {partition} of {topic} was committed to {table} by another processor of \
         group {group} since this one took it (checkpoint {found:?}, not {expected:?}): \
         this processor no longer owns it and stops; the other carries on"
    )]
    Fenced {
        table: String,
        group: String,
        topic: String,
        partition: i32,
        found: Option<i64>,
        expected: Option<i64>,
    },
    /// A compaction could not rewrite a table's small files; nothing was committed.
    #[error("cannot compact {table}: {problem}")]
    Compact { table: String, problem: String },
    /// The checkpoint a partition's commit names is neither saved beside the tables nor in
    /// the table's log any more.
    #[error(
        "{table} says partition {partition} was last committed by checkpoint {epoch}, which \
         is neither in the checkpoints folder nor in the table's log"
    )]
    Lost {
        table: String,
        partition: i32,
        epoch: i64,
    },
    /// A table is there already, but not one of this dataset's.
    #[error("{table} is a Delta table of {found}, not the {dataset} dataset's {wanted}")]
    Foreign {
        table: String,
        dataset: Dataset,
        found: String,
        wanted: String,
    },
}

/// The three tables of a run, committed to from the processing thread.
pub struct Tables {
    runtime: tokio::runtime::Runtime,
    /// By [`Dataset::index`].
    tables: Vec<Table>,
}

struct Table {
    bucket: String,
    location: String,
    table: DeltaTable,
    txns: Txns,
}

/// Transaction versions of a table as of one of its versions, kept up to date by reading
/// each newer commit once: a lookup through delta-rs replays the log since its last
/// checkpoint (3 lookups took 3 ms at 10 commits since, 12 ms at 90, on local disk; on S3
/// each replay reads every one of those commits), and fencing looks up every partition's at
/// every checkpoint.
#[derive(Default)]
struct Txns {
    at: Option<u64>,
    /// By application id; `None`: no transaction of that id as of `at`.
    versions: HashMap<String, Option<i64>>,
}

impl Txns {
    /// Brings the known versions up to `table`'s version, reading the commits since; when one
    /// of those is gone from the log, forgets them all (lookups then go to delta-rs).
    async fn catch_up(&mut self, table: &DeltaTable) -> Result<(), DeltaTableError> {
        let Some(version) = table.version() else {
            return Ok(());
        };
        let Some(at) = self.at.filter(|&at| at <= version) else {
            self.versions.clear();
            self.at = Some(version);
            return Ok(());
        };
        for v in at + 1..=version {
            let Some(actions) = commit_actions(table, v).await? else {
                self.versions.clear();
                break;
            };
            for action in &actions {
                let txn = &action["txn"];
                if let (Some(app), Some(txn_version)) =
                    (txn["appId"].as_str(), txn["version"].as_i64())
                {
                    self.versions.insert(app.to_string(), Some(txn_version));
                }
            }
        }
        self.at = Some(version);
        Ok(())
    }
}

/// The actions of `table`'s commit `version` as JSON objects; `None` when the log no longer
/// holds it.
async fn commit_actions(
    table: &DeltaTable,
    version: u64,
) -> Result<Option<Vec<serde_json::Value>>, DeltaTableError> {
    let Some(bytes) = table.log_store().read_commit_entry(version).await? else {
        return Ok(None);
    };
    serde_json::Deserializer::from_slice(&bytes)
        .into_iter()
        .collect::<Result<_, _>>()
        .map(Some)
        .map_err(|json_err| DeltaTableError::InvalidJsonLog {
            json_err,
            version,
            line: String::new(),
        })
}

impl Tables {
    /// Opens the tables under `root`, one per bucket, creating those that do not exist yet.
    pub fn open(root: TableRoot<'_>, buckets: &Buckets) -> Result<Self, TableError> {
        let runtime = runtime()?;
        if let TableRoot::S3(settings, outage) = &root {
            PipelineS3::register(settings, outage.clone());
        }
        let tables = Dataset::ALL
            .iter()
            .map(|&dataset| {
                let bucket = buckets.of(dataset).to_string();
                let location = root.location(&bucket);
                let table = runtime
                    .block_on(open_or_create(&location, dataset))
                    .map_err(failed(&location))?;
                check_columns(&table, &location, dataset)?;
                Ok(Table {
                    bucket,
                    location,
                    table,
                    txns: Txns::default(),
                })
            })
            .collect::<Result<_, TableError>>()?;
        Ok(Tables { runtime, tables })
    }

    /// Adds published `files` to their tables: one commit per table that has any.
    pub fn commit(&mut self, files: &[WrittenFile]) -> Result<(), TableError> {
        for dataset in Dataset::ALL {
            let of: Vec<WrittenFile> = files
                .iter()
                .filter(|f| f.dataset == dataset)
                .cloned()
                .collect();
            if !of.is_empty() {
                self.append(dataset, &of, Vec::new(), None)?;
            }
        }
        Ok(())
    }

    /// One commit to `dataset`'s table adding `files`, with the transaction actions `txns`
    /// and, in its commit info under `pageview`, `info`. delta-rs retries a commit another
    /// writer got in ahead of, unless that one set one of the same transactions.
    pub(super) fn append(
        &mut self,
        dataset: Dataset,
        files: &[WrittenFile],
        txns: Vec<Transaction>,
        info: Option<serde_json::Value>,
    ) -> Result<(), TableError> {
        let now_ms = crate::generate::now_ms();
        let table = &mut self.tables[dataset.index()];
        let adds: Vec<Action> = files
            .iter()
            .map(|f| Action::Add(add(&table.bucket, f, now_ms)))
            .collect();
        let columns = partition_columns(dataset);
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: (!columns.is_empty())
                .then(|| columns.iter().map(|c| c.to_string()).collect()),
            predicate: None,
        };
        let properties = CommitProperties::default()
            .with_application_transactions(txns)
            .with_metadata(info.map(|info| ("pageview".to_string(), info)));
        self.commit_actions(dataset, adds, operation, properties)
    }

    /// One commit of `actions` to `dataset`'s table, which then holds its new version: the
    /// state the commit made, since reading the log again replayed every file of the table a
    /// second time (a fifth of a sparse input's CPU, which committed a table of a thousand
    /// files every tick). A later commit another writer got in ahead of is found when the
    /// next commit conflicts with it, or by [`Tables::refresh`]. `properties` start from the
    /// defaults, which write a Delta checkpoint every 100 versions, so readers never replay
    /// more than that many commits.
    fn commit_actions(
        &mut self,
        dataset: Dataset,
        actions: Vec<Action>,
        operation: DeltaOperation,
        properties: CommitProperties,
    ) -> Result<(), TableError> {
        let table = &mut self.tables[dataset.index()];
        let delta = &mut table.table;
        let committed = self
            .runtime
            .block_on(async {
                CommitBuilder::from(properties)
                    .with_actions(actions)
                    .build(Some(delta.snapshot()?), delta.log_store(), operation)
                    .await
            })
            .map_err(failed(&table.location))?;
        delta.state = Some(committed.snapshot);
        Ok(())
    }

    /// Brings `dataset`'s table up to its newest version.
    pub(super) fn refresh(&mut self, dataset: Dataset) -> Result<(), TableError> {
        let table = &mut self.tables[dataset.index()];
        let delta = &mut table.table;
        self.runtime
            .block_on(delta.update_state())
            .map_err(failed(&table.location))
    }

    /// The version of the transaction `app_id` as of the last refresh of `dataset`'s table.
    pub(super) fn txn(
        &mut self,
        dataset: Dataset,
        app_id: &str,
    ) -> Result<Option<i64>, TableError> {
        let table = &mut self.tables[dataset.index()];
        let (delta, txns) = (&table.table, &mut table.txns);
        self.runtime
            .block_on(async {
                txns.catch_up(delta).await?;
                if let Some(&known) = txns.versions.get(app_id) {
                    return Ok(known);
                }
                let log_store = delta.log_store();
                let found = delta
                    .snapshot()?
                    .transaction_version(log_store.as_ref(), app_id)
                    .await?;
                txns.versions.insert(app_id.to_string(), found);
                Ok(found)
            })
            .map_err(failed(&table.location))
    }

    /// The commits of `dataset`'s table, newest first, as each one's actions (JSON objects),
    /// until `wanted` returns something or the log holds no older commit.
    pub(super) fn find_commit<T>(
        &self,
        dataset: Dataset,
        mut wanted: impl FnMut(&[serde_json::Value]) -> Option<T>,
    ) -> Result<Option<T>, TableError> {
        let table = &self.tables[dataset.index()];
        let delta = &table.table;
        let Some(newest) = delta.version() else {
            return Ok(None);
        };
        self.runtime
            .block_on(async {
                for version in (0..=newest).rev() {
                    let Some(actions) = commit_actions(delta, version).await? else {
                        break;
                    };
                    if let Some(found) = wanted(&actions) {
                        return Ok(Some(found));
                    }
                }
                Ok(None)
            })
            .map_err(failed(&table.location))
    }

    /// Where `dataset`'s table is, for messages.
    pub(super) fn location(&self, dataset: Dataset) -> &str {
        &self.tables[dataset.index()].location
    }

    /// The dataset whose table a published key is in.
    pub(super) fn dataset_of(&self, key: &str) -> Option<Dataset> {
        Dataset::ALL.into_iter().find(|d| {
            let bucket = &self.tables[d.index()].bucket;
            key.strip_prefix(bucket.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// Whether a commit failed because another writer committed one of the same transactions
/// since the commit's snapshot: the one place two processors' claims on a partition meet.
pub(super) fn lost_to_another(error: &TableError) -> bool {
    matches!(
        error,
        TableError::Delta { source, .. } if matches!(
            source.as_ref(),
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(
                    CommitConflictError::ConcurrentTransaction
                )
            }
        )
    )
}

/// delta-rs runs on tokio; the processing thread waits for each call.
fn runtime() -> Result<tokio::runtime::Runtime, TableError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TableError::Runtime)
}

/// Names the table a delta-rs error is about.
fn failed(location: &str) -> impl FnOnce(DeltaTableError) -> TableError + use<> {
    let table = location.to_string();
    move |source| TableError::Delta {
        table,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Int64Array, StringArray};

    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use arrow_array::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::Compression;

    use super::*;
    use crate::commit::compaction::{Merge, Policy};
    use crate::storage::{LocalStorage, Storage};

    const TARGET: u64 = 1 << 20;

    fn open(root: &Path) -> Tables {
        let buckets = Buckets::new(["raw", "agg", "dlq"].map(String::from), "cp".into());
        Tables::open(TableRoot::Folder(root), &buckets).unwrap()
    }

    /// Publishes a raw file of the user ids `ids` and adds it to the table.
    fn append(tables: &mut Tables, storage: &dyn Storage, name: &str, ids: std::ops::Range<i64>) {
        let schema = Dataset::Raw.schema();
        let n = ids.clone().count();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids)),
                Arc::new(StringArray::from(vec!["E1"; n])),
                Arc::new(StringArray::from(vec!["https://a"; n])),
                Arc::new(Int64Array::from(vec![1_700_000_000_000; n])),
            ],
        )
        .unwrap();
        let mut writer =
            ArrowWriter::try_new(storage.create("raw").unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        let key = format!("raw/dt=2023-11-14/event_hour=22/{name}");
        let bytes = writer.into_inner().unwrap().publish(&key).unwrap();
        let file = WrittenFile {
            dataset: Dataset::Raw,
            key,
            rows: n as u64,
            bytes,
        };
        tables.commit(&[file]).unwrap();
    }

    /// Commits the compaction `planned` of the raw table as a pass of the compactor would.
    fn merge(
        tables: &mut Tables,
        storage: &dyn Storage,
        planned: &[Merge],
    ) -> Result<Vec<WrittenFile>, TableError> {
        tables.commit_merges(Dataset::Raw, planned, storage, Compression::SNAPPY, TARGET)
    }

    /// The user ids a reader of the raw table's current version sees, sorted.
    fn user_ids(root: &Path) -> Vec<i64> {
        let table = root.join("raw");
        let mut ids: Vec<i64> = current_files(&TableRoot::Folder(root), "raw")
            .unwrap()
            .unwrap()
            .iter()
            .flat_map(|f| {
                let file = std::fs::File::open(table.join(&f.path)).unwrap();
                ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap()
                    .flat_map(|batch| {
                        let batch = batch.unwrap();
                        let ids = batch.column(0).as_any().downcast_ref::<Int64Array>();
                        ids.unwrap().values().to_vec()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn of_two_compactions_of_the_same_files_one_commits_and_no_row_is_read_twice() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let (mut a, mut b) = (open(dir.path()), open(dir.path()));
        for i in 0..3 {
            append(
                &mut a,
                &storage,
                &format!("part-{i}.parquet"),
                i * 10..i * 10 + 10,
            );
        }
        let planned = a
            .plan_compaction(Dataset::Raw, TARGET, Policy::All)
            .unwrap();
        assert_eq!(
            b.plan_compaction(Dataset::Raw, TARGET, Policy::All)
                .unwrap(),
            planned
        );
        assert_eq!(planned[0].inputs.len(), 3);
        merge(&mut a, &storage, &planned).unwrap();
        // A processor's append since changes nothing for the other compaction.
        append(&mut a, &storage, "part-3.parquet", 30..40);
        let err = merge(&mut b, &storage, &planned).unwrap_err();
        assert!(
            matches!(err, TableError::Compact { .. })
                && err.to_string().contains("was removed meanwhile"),
            "{err}"
        );
        assert_eq!(user_ids(dir.path()), (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn files_added_before_a_time_leave_the_table_but_not_older_versions() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let mut tables = open(dir.path());
        append(&mut tables, &storage, "part-old.parquet", 0..10);
        std::thread::sleep(Duration::from_millis(5));
        let cutoff = crate::generate::now_ms();
        std::thread::sleep(Duration::from_millis(5));
        append(&mut tables, &storage, "part-new.parquet", 10..20);
        // A compaction planned before the expiry commits nothing after it.
        let planned = open(dir.path())
            .plan_compaction(Dataset::Raw, TARGET, Policy::All)
            .unwrap();
        assert_eq!(tables.expire(Dataset::Raw, cutoff).unwrap(), 1);
        assert_eq!(user_ids(dir.path()), (10..20).collect::<Vec<_>>());
        assert!(
            dir.path()
                .join("raw/dt=2023-11-14/event_hour=22/part-old.parquet")
                .exists(),
            "a reader of the version before still finds it, until vacuum"
        );
        assert_eq!(tables.expire(Dataset::Raw, cutoff).unwrap(), 0, "once");
        let err = merge(&mut tables, &storage, &planned).unwrap_err();
        assert!(err.to_string().contains("was removed meanwhile"), "{err}");
        assert_eq!(user_ids(dir.path()), (10..20).collect::<Vec<_>>());
        let root = TableRoot::Folder(dir.path());
        assert_eq!(expire(&root, "raw", i64::MAX).unwrap(), Some(1));
        assert_eq!(user_ids(dir.path()), Vec::<i64>::new());
        assert_eq!(expire(&root, "elsewhere", i64::MAX).unwrap(), None);
    }

    #[test]
    fn transactions_read_from_new_commits_agree_with_a_replay_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let (mut a, mut b) = (open(dir.path()), open(dir.path()));
        let apps = ["app/0", "app/1", "app/2"];
        let check = |a: &mut Tables, step: usize| {
            a.refresh(Dataset::Raw).unwrap();
            let mut replayed = open(dir.path());
            for app in apps {
                assert_eq!(
                    a.txn(Dataset::Raw, app).unwrap(),
                    replayed.txn(Dataset::Raw, app).unwrap(),
                    "{app} after step {step}"
                );
            }
        };
        check(&mut a, 0);
        for step in 1..=12_i64 {
            // Commits of both handles, some setting transactions, some (a compaction) none.
            let writer = if step % 3 == 0 { &mut b } else { &mut a };
            let app = apps[step as usize % 2];
            let txns = vec![Transaction::new(app, step * 10)];
            writer.refresh(Dataset::Raw).unwrap();
            writer.append(Dataset::Raw, &[], txns, None).unwrap();
            if step % 4 == 0 {
                append(&mut b, &storage, &format!("part-{step}.parquet"), 0..1);
                append(&mut b, &storage, &format!("part-{step}b.parquet"), 1..2);
                b.compact(Dataset::Raw, &storage, Compression::SNAPPY, TARGET)
                    .unwrap();
            }
            check(&mut a, step as usize);
        }
        assert_eq!(a.txn(Dataset::Raw, "app/0").unwrap(), Some(120));
        assert_eq!(a.txn(Dataset::Raw, "app/2").unwrap(), None);
    }

    #[test]
    fn a_compaction_commits_over_appends_made_since_it_read_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let (mut processor, mut compactor) = (open(dir.path()), open(dir.path()));
        append(&mut processor, &storage, "part-0.parquet", 0..10);
        append(&mut processor, &storage, "part-1.parquet", 10..20);
        let planned = compactor
            .plan_compaction(Dataset::Raw, TARGET, Policy::All)
            .unwrap();
        append(&mut processor, &storage, "part-2.parquet", 20..30);
        let written = merge(&mut compactor, &storage, &planned).unwrap();
        assert_eq!(written[0].rows, 20);
        let files = current_files(&TableRoot::Folder(dir.path()), "raw")
            .unwrap()
            .unwrap();
        assert_eq!(
            files.len(),
            2,
            "the compacted file and the one appended since"
        );
        assert_eq!(user_ids(dir.path()), (0..30).collect::<Vec<_>>());
    }
}
