//! What the commands run on a table they open for one call: whether there is one, its
//! files, vacuum and expiry.

use std::future::Future;
use std::time::Duration;

use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};

use futures_util::TryStreamExt;

use super::root::{PipelineS3, TableRoot};
use super::{TableError, failed, runtime};
use crate::storage::Listed;

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

/// The version of the transaction `app_id` in `bucket`'s Delta table under `root`, as of
/// its current version; `None` without a table or without that transaction.
pub fn txn_version(
    root: &TableRoot<'_>,
    bucket: &str,
    app_id: &str,
) -> Result<Option<i64>, TableError> {
    let app_id = app_id.to_string();
    let found = on_table(root, bucket, |table| async move {
        let log_store = table.log_store();
        table
            .snapshot()?
            .transaction_version(log_store.as_ref(), &app_id)
            .await
    })?;
    Ok(found.flatten())
}

/// The data files of `table`'s version, in no particular order.
pub(super) async fn table_files(table: &DeltaTable) -> Result<Vec<Listed>, DeltaTableError> {
    table
        .get_active_add_actions_by_partitions(&[])
        .map_ok(|file| Listed {
            path: file.path().into_owned(),
            bytes: file.size() as u64,
        })
        .try_collect::<Vec<Listed>>()
        .await
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
pub(super) async fn expire_files(
    table: &mut DeltaTable,
    before_ms: i64,
) -> Result<usize, DeltaTableError> {
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
