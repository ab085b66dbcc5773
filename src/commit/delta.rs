//! The datasets as Delta Lake tables (`--table-format delta`): each at the root of its
//! bucket, its data files the pipeline's own Parquet files in the same `dt=`/`event_hour=`
//! folders, made part of the table by a commit to the table's log through delta-rs. A file
//! is in the table once the commit naming it is in the log, and readers of the table see
//! nothing of a commit until it is whole.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType as ArrowType, TimeUnit};
use deltalake::DeltaResult;
use deltalake::kernel::transaction::{
    CommitBuilder, CommitConflictError, CommitProperties, TransactionError,
};
use deltalake::kernel::{Action, Add, DataType, Remove, StructField, Transaction};
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::operations::create::CreateBuilder;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use futures_util::TryStreamExt;

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::compaction::{self, Merge, Part, Policy};
use crate::sink::{Dataset, WrittenFile, naming, writer_properties};
use crate::storage::{Buckets, Listed, Outage, S3Settings, Storage};

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

/// The partition columns of each dataset's table, in path order: what its folders are named
/// by.
fn partition_columns(dataset: Dataset) -> &'static [&'static str] {
    match dataset {
        Dataset::Raw => &["dt", "event_hour"],
        Dataset::Aggregated => &["dt"],
        Dataset::Dlq => &[],
    }
}

/// Where the tables are: each at the root of its dataset's bucket, in a folder or on S3
/// (whose requests wait out S3 failing with the pipeline's own, through their outage).
pub enum TableRoot<'a> {
    Folder(&'a Path),
    S3(&'a S3Settings, Arc<Outage>),
}

impl TableRoot<'_> {
    /// Where `bucket`'s table is, as delta-rs is told.
    fn location(&self, bucket: &str) -> String {
        match self {
            TableRoot::Folder(root) => root.join(bucket).to_string_lossy().into_owned(),
            TableRoot::S3(..) => format!("s3://{bucket}"),
        }
    }

    /// Whether `bucket` holds a Delta table: a log.
    async fn has_table(&self, bucket: &str) -> Result<bool, DeltaTableError> {
        match self {
            TableRoot::Folder(root) => Ok(root.join(bucket).join("_delta_log").is_dir()),
            TableRoot::S3(settings, outage) => {
                let store = settings
                    .object_store(bucket, outage.clone())
                    .map_err(|e| DeltaTableError::generic(e.to_string()))?;
                let log = deltalake::Path::from("_delta_log");
                Ok(store.list(Some(&log)).try_next().await?.is_some())
            }
        }
    }
}

/// How delta-rs reaches `s3://<bucket>` tables: through the pipeline's own S3 clients (its
/// endpoint, credentials, timeouts and retries), and with delta-rs's default log store,
/// which commits a version with a conditional put (If-None-Match), as S3 has answered since
/// 2024: one commit per version without a lock table.
/// Its stores wait out S3 failing as the pipeline's own requests do, in the same outage.
struct PipelineS3 {
    settings: S3Settings,
    outage: Arc<Outage>,
}

impl PipelineS3 {
    /// delta-rs finds a table's stores by its URL's scheme, in process-wide registries.
    fn register(settings: &S3Settings, outage: Arc<Outage>) {
        let this = Arc::new(PipelineS3 {
            settings: settings.clone(),
            outage,
        });
        let scheme = Url::parse("s3://").expect("a valid URL");
        object_store_factories().insert(scheme.clone(), this.clone());
        logstore_factories().insert(scheme, this);
    }
}

impl ObjectStoreFactory for PipelineS3 {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, deltalake::Path)> {
        let bucket = url
            .host_str()
            .ok_or_else(|| DeltaTableError::InvalidTableLocation(url.to_string()))?;
        let store = self
            .settings
            .object_store(bucket, self.outage.clone())
            .map_err(|e| DeltaTableError::generic(e.to_string()))?;
        Ok((store, deltalake::Path::from(url.path())))
    }
}

impl LogStoreFactory for PipelineS3 {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
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
                let bucket = dataset.bucket(buckets).to_string();
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

    /// One commit of `actions` to `dataset`'s table, which then holds its new version.
    /// `properties` start from the defaults, which write a Delta checkpoint every 100
    /// versions, so readers never replay more than that many commits.
    fn commit_actions(
        &mut self,
        dataset: Dataset,
        actions: Vec<Action>,
        operation: DeltaOperation,
        properties: CommitProperties,
    ) -> Result<(), TableError> {
        let table = &mut self.tables[dataset.index()];
        let delta = &mut table.table;
        self.runtime
            .block_on(async {
                CommitBuilder::from(properties)
                    .with_actions(actions)
                    .build(Some(delta.snapshot()?), delta.log_store(), operation)
                    .await?;
                delta.update_state().await
            })
            .map_err(failed(&table.location))
    }

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
    pub(super) fn plan_compaction(
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
    pub(super) fn commit_merges(
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
    pub(super) fn expire(&mut self, dataset: Dataset, before_ms: i64) -> Result<usize, TableError> {
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

/// Whether `bucket` under `root` holds a Delta table.
pub fn has_table(root: &TableRoot<'_>, bucket: &str) -> Result<bool, TableError> {
    runtime()?
        .block_on(root.has_table(bucket))
        .map_err(failed(&root.location(bucket)))
}

/// The data files of `bucket`'s Delta table under `root` as of its current version, sorted
/// by path: what a reader of the table sees, whatever else the bucket holds (files of a commit
/// that never happened, files a later commit removed). `None` when the bucket holds no table.
pub fn current_files(
    root: &TableRoot<'_>,
    bucket: &str,
) -> Result<Option<Vec<Listed>>, TableError> {
    let files = on_table(
        root,
        bucket,
        |table| async move { table_files(&table).await },
    )?;
    Ok(files.map(|mut files| {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }))
}

/// The data files of `table`'s version, in no particular order.
async fn table_files(table: &DeltaTable) -> Result<Vec<Listed>, DeltaTableError> {
    table
        .get_active_add_actions_by_partitions(&[])
        .map_ok(|file| Listed {
            path: file.path().into_owned(),
            bytes: file.size() as u64,
        })
        .try_collect::<Vec<Listed>>()
        .await
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

/// Deletes the files of `bucket`'s Delta table under `root` that no version younger than
/// `retention` needs, and those no commit names that are older than it; their paths. `None`
/// when the bucket holds no table.
pub fn vacuum(
    root: &TableRoot<'_>,
    bucket: &str,
    retention_days: u32,
) -> Result<Option<Vec<String>>, TableError> {
    on_table(root, bucket, |table| async move {
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(chrono::Duration::days(retention_days.into()))
            .with_mode(VacuumMode::Full)
            // The retention is the operator's choice, checked by the command line.
            .with_enforce_retention_duration(false)
            .await?;
        Ok(metrics.files_deleted)
    })
}

/// The time before which a file was added `retention` or longer ago, for [`expire`].
pub fn added_before(retention: Duration) -> i64 {
    crate::generate::now_ms() - retention.as_millis() as i64
}

/// Removes from `bucket`'s Delta table under `root` the files added before `before_ms`; how
/// many. `None` when the bucket holds no table.
pub fn expire(
    root: &TableRoot<'_>,
    bucket: &str,
    before_ms: i64,
) -> Result<Option<usize>, TableError> {
    on_table(root, bucket, |mut table| async move {
        expire_files(&mut table, before_ms).await
    })
}

/// Removes from `table`'s version, in one commit, every file added before `before_ms`: a
/// data change, so readers of later versions no longer see their rows, while one reading an
/// older version still finds them until vacuum deletes them after its retention. A file a
/// concurrent compaction rewrote meanwhile is removed twice (harmlessly) and its rows stay in
/// the rewritten file, which expires in turn.
async fn expire_files(table: &mut DeltaTable, before_ms: i64) -> Result<usize, DeltaTableError> {
    let removes: Vec<Action> = table
        .get_active_add_actions_by_partitions(&[])
        .try_filter_map(|file| async move {
            Ok((file.modification_time() < before_ms)
                .then(|| Action::Remove(file.remove_action(true))))
        })
        .try_collect()
        .await?;
    if removes.is_empty() {
        return Ok(0);
    }
    let expired = removes.len();
    let operation = DeltaOperation::Delete { predicate: None };
    CommitBuilder::default()
        .with_actions(removes)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    table.update_state().await?;
    Ok(expired)
}

/// Runs `work` on `bucket`'s Delta table under `root`, on a runtime of its own for this one
/// call; `None`, without running it, when the bucket holds no table.
fn on_table<T, F>(
    root: &TableRoot<'_>,
    bucket: &str,
    work: impl FnOnce(DeltaTable) -> F,
) -> Result<Option<T>, TableError>
where
    F: Future<Output = Result<T, DeltaTableError>>,
{
    if let TableRoot::S3(settings, outage) = root {
        PipelineS3::register(settings, outage.clone());
    }
    let location = root.location(bucket);
    runtime()?
        .block_on(async {
            if !root.has_table(bucket).await? {
                return Ok(None);
            }
            let table = deltalake::open_table(deltalake::ensure_table_uri(&location)?).await?;
            work(table).await.map(Some)
        })
        .map_err(failed(&location))
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

/// The table at `location`, created empty with the dataset's columns if there is none.
async fn open_or_create(location: &str, dataset: Dataset) -> Result<DeltaTable, DeltaTableError> {
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
fn check_columns(table: &DeltaTable, location: &str, dataset: Dataset) -> Result<(), TableError> {
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
fn add(bucket: &str, file: &WrittenFile, now_ms: i64) -> Add {
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

#[cfg(test)]
mod tests {
    use arrow_array::{Int64Array, StringArray};

    use super::*;
    use crate::storage::LocalStorage;

    const TARGET: u64 = 1 << 20;

    fn open(root: &Path) -> Tables {
        let buckets = Buckets {
            raw: "raw".into(),
            aggregated: "agg".into(),
            dlq: "dlq".into(),
            checkpoints: "cp".into(),
        };
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
