//! The commit point of a Kafka run into Delta tables: the raw table's log.
//!
//! A checkpoint is one commit to the raw table that adds its raw files, sets one transaction
//! action per partition it covers (`pageview/<group>/<topic>/partition/<p>`, version = the
//! checkpoint's epoch) and holds the whole checkpoint (cursors, open windows, the files it
//! publishes) in its commit info. That commit is the checkpoint: a processor resumes each
//! partition from the checkpoint its transaction names. Two processors that both believe
//! they own a partition both set its transaction; the log takes one commit per version and
//! delta-rs refuses a commit whose transactions another commit set since its snapshot, so
//! exactly one commits and the other stops.
//!
//! The DLQ files of the checkpoint follow in one commit to their table, which sets the
//! writer's transaction (`…/checkpoints/<member>`, version = epoch): whoever
//! completes a checkpoint its writer left half done (the writer itself, or the next owner of
//! any of its partitions) adds them once. Then the checkpoint is also saved beside the
//! tables (`<checkpoints bucket>/<group>/<epoch>-<member>.json`), so that recovery does not
//! depend on the log keeping old commits; one a writer died before saving is read from the
//! log.
//!
//! Closed windows are partial counts, published once their checkpoint's raw commit is in,
//! and merged into the aggregated table by a commit per merge (`delta::TableMerges`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use deltalake::kernel::Transaction;

use super::delta::{TableError, TableMerges, Tables, lost_to_another};
use super::merger::MergeLog;
use super::{CommitError, CommitPoint, Manifests, Merger, Pass};
use crate::checkpoint::{self, Manifest, Recovery, StagedFile};
use crate::sink::{Dataset, WrittenFile};
use crate::storage::Storage;

pub struct TableLog {
    tables: Mutex<Tables>,
    saved: Manifests,
    storage: Arc<dyn Storage>,
    group: String,
    topic: String,
    /// The epoch each partition was last committed at, by this processor or (as recovered)
    /// before it took the partition: a raw table naming another means another processor
    /// committed it since.
    owned: Mutex<BTreeMap<i32, Option<i64>>>,
    /// Merges the group's partial counts into the aggregated table.
    merger: Option<Merger>,
}

impl TableLog {
    pub fn new(
        tables: Tables,
        storage: Arc<dyn Storage>,
        checkpoints: &str,
        group: &str,
        topic: &str,
    ) -> Self {
        TableLog {
            tables: Mutex::new(tables),
            saved: Manifests::new(storage.clone(), checkpoints, group, topic),
            storage,
            group: group.into(),
            topic: topic.into(),
            owned: Mutex::new(BTreeMap::new()),
            merger: None,
        }
    }

    /// The group's processors write closed windows as partial counts, which `merger` merges
    /// into the aggregated table after its checkpoints.
    pub fn merged_by(mut self, merger: Merger) -> Self {
        self.merger = Some(merger);
        self
    }

    /// Whether `file` holds partial counts, published only once its checkpoint is committed.
    fn is_partial(&self, file: &StagedFile) -> bool {
        self.merger
            .as_ref()
            .is_some_and(|m| file.key.starts_with(m.partials()))
    }

    /// Publishes the partial counts of the committed checkpoint `manifest`.
    fn publish_partials(
        &self,
        tables: &mut Tables,
        manifest: &Manifest,
    ) -> Result<(), CommitError> {
        let Some(merger) = &self.merger else {
            return Ok(());
        };
        let merges = TableMerges::new(tables, &self.group, &self.topic);
        for file in manifest.files.iter().filter(|f| self.is_partial(f)) {
            merger.publish(file, &merges)?;
        }
        Ok(())
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn partition_app(&self, partition: i32) -> String {
        format!(
            "pageview/{}/{}/partition/{partition}",
            self.group, self.topic
        )
    }

    fn writer_app(&self, member: &str) -> String {
        format!(
            "pageview/{}/{}/checkpoints/{member}",
            self.group, self.topic
        )
    }

    /// The checkpoint of epoch `epoch` covering `partition`, from the raw table's log.
    fn logged(&self, tables: &Tables, partition: i32, epoch: i64) -> Result<Manifest, CommitError> {
        let app = self.partition_app(partition);
        let found = tables.find_commit(Dataset::Raw, |actions| {
            let sets = actions.iter().any(|a| {
                a["txn"]["appId"].as_str() == Some(app.as_str())
                    && a["txn"]["version"].as_i64() == Some(epoch)
            });
            let info = actions
                .iter()
                .find_map(|a| a["commitInfo"].get("pageview"))?;
            sets.then(|| serde_json::from_value::<Manifest>(info.clone()))
        })?;
        match found {
            Some(parsed) => Ok(Manifest::checked(
                parsed,
                format!("{} (commit info)", tables.location(Dataset::Raw)),
            )?),
            None => Err(TableError::Lost {
                table: tables.location(Dataset::Raw).into(),
                partition,
                epoch,
            }
            .into()),
        }
    }

    /// Adds the aggregated and DLQ files of `manifest` to their tables, unless its writer's
    /// transaction there says they are in already. `just_committed`: its raw commit was made
    /// a moment ago by this processor, so the files can only be in already if another one
    /// completed the checkpoint since, which delta-rs finds as a concurrent commit of the same
    /// transaction: the first attempt then skips reading the table's newest version first.
    fn follow(
        &self,
        tables: &mut Tables,
        manifest: &Manifest,
        just_committed: bool,
    ) -> Result<(), CommitError> {
        let app = self.writer_app(&manifest.member);
        let epoch = manifest.epoch as i64;
        for dataset in [Dataset::Aggregated, Dataset::Dlq] {
            let files = files_of(tables, manifest, dataset);
            if files.is_empty() {
                continue;
            }
            // Another processor completing the same checkpoint may get in first: then its
            // transaction is there on the next look.
            let mut attempts = 0;
            loop {
                if attempts > 0 || !just_committed {
                    tables.refresh(dataset)?;
                    if tables.txn(dataset, &app)?.is_some_and(|done| done >= epoch) {
                        break;
                    }
                }
                let txn = Transaction::new(&app, epoch);
                match tables.append(dataset, &files, vec![txn], None) {
                    Ok(()) => break,
                    Err(e) if lost_to_another(&e) && attempts < 3 => attempts += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// The partition of `manifest` whose transaction in the raw table is not the one this
    /// processor last knew, if any: then another processor committed it.
    fn fenced(&self, tables: &mut Tables, manifest: &Manifest) -> Result<(), CommitError> {
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        for &partition in manifest.partitions.keys() {
            let expected = owned.get(&partition).copied().flatten();
            let found = tables.txn(Dataset::Raw, &self.partition_app(partition))?;
            if found != expected {
                return Err(self.taken(tables, partition, found, expected));
            }
        }
        Ok(())
    }

    /// Whether the commit the raw table holds for `manifest`'s epoch is `manifest`'s own: a
    /// commit S3 took while its answer was lost in an outage is tried again, and then meets
    /// itself as the commit that got in first.
    fn landed(&self, tables: &mut Tables, manifest: &Manifest) -> Result<bool, CommitError> {
        let epoch = manifest.epoch as i64;
        let Some(&partition) = manifest.partitions.keys().next() else {
            return Ok(false);
        };
        if tables.txn(Dataset::Raw, &self.partition_app(partition))? != Some(epoch) {
            return Ok(false);
        }
        Ok(self.logged(tables, partition, epoch)? == *manifest)
    }

    fn taken(
        &self,
        tables: &Tables,
        partition: i32,
        found: Option<i64>,
        expected: Option<i64>,
    ) -> CommitError {
        TableError::Fenced {
            table: tables.location(Dataset::Raw).into(),
            group: self.group.clone(),
            topic: self.topic.clone(),
            partition,
            found,
            expected,
        }
        .into()
    }
}

impl CommitPoint for TableLog {
    fn recover(&self, assigned: &[i32]) -> Result<Recovery, CommitError> {
        let saved = self.saved.load()?;
        let mut tables = self.tables();
        tables.refresh(Dataset::Raw)?;
        let mut from: Vec<Manifest> = Vec::new();
        let mut above = saved.iter().map(|(_, m)| m.epoch + 1).max().unwrap_or(0);
        for &partition in assigned {
            let Some(epoch) = tables.txn(Dataset::Raw, &self.partition_app(partition))? else {
                continue;
            };
            above = above.max(epoch as u64 + 1);
            let is_it =
                |m: &Manifest| m.epoch as i64 == epoch && m.partitions.contains_key(&partition);
            if from.iter().any(is_it) {
                continue;
            }
            match saved.iter().find(|(_, m)| is_it(m)) {
                Some((_, m)) => from.push(m.clone()),
                None => from.push(self.logged(&tables, partition, epoch)?),
            }
        }
        let mut recovery = checkpoint::recover(&from, assigned);
        recovery.epoch = recovery.epoch.max(above);
        // Files are published before the commit that adds them: none waits for recovery.
        recovery.unpublished.clear();
        (recovery.superseded, recovery.replaced) = checkpoint::sort_out(saved, assigned);
        if let Some(merger) = &self.merger {
            let merges = TableMerges::new(&mut tables, &self.group, &self.topic);
            recovery.merged_to(merges.merged_to(merger)?, assigned);
        }
        Ok(recovery)
    }

    fn complete(&self, recovery: &Recovery) -> Result<(), CommitError> {
        let mut tables = self.tables();
        let saved = self.saved.names()?;
        for manifest in &recovery.from {
            self.follow(&mut tables, manifest, false)?;
            self.publish_partials(&mut tables, manifest)?;
            if !saved.contains(&checkpoint::manifest_name(manifest.epoch, &manifest.member)) {
                self.saved.save(manifest)?;
            }
        }
        *self.owned.lock().unwrap_or_else(|e| e.into_inner()) = recovery
            .committed
            .iter()
            .map(|(&p, &epoch)| (p, Some(epoch as i64)))
            .collect();
        Ok(self.saved.tidy(&recovery.superseded)?)
    }

    fn commit(&self, manifest: &Manifest, replaced: &[String]) -> Result<String, CommitError> {
        tracing::debug!("committing checkpoint {}", manifest.epoch);
        // Files no table names yet are invisible to readers of the tables; partial counts
        // are not in a table, so they wait for the commit.
        for file in manifest.files.iter().filter(|f| !self.is_partial(f)) {
            self.storage.publish_staged(&file.staged, &file.key)?;
        }
        let mut tables = self.tables();
        tables.refresh(Dataset::Raw)?;
        self.fenced(&mut tables, manifest)?;
        let epoch = manifest.epoch as i64;
        let txns = manifest
            .partitions
            .keys()
            .map(|&p| Transaction::new(self.partition_app(p), epoch))
            .collect();
        let raw = files_of(&tables, manifest, Dataset::Raw);
        let info = serde_json::to_value(manifest).expect("a manifest always serialises");
        if let Err(e) = tables.append(Dataset::Raw, &raw, txns, Some(info)) {
            if !lost_to_another(&e) {
                return Err(e.into());
            }
            tables.refresh(Dataset::Raw)?;
            if !self.landed(&mut tables, manifest)? {
                self.fenced(&mut tables, manifest)?;
                return Err(e.into());
            }
        }
        {
            let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
            for &p in manifest.partitions.keys() {
                owned.insert(p, Some(epoch));
            }
        }
        // The windows it closed are readable once the aggregated table has its files: before
        // the copy saved beside, which recovery can also read from the log.
        self.follow(&mut tables, manifest, true)?;
        self.publish_partials(&mut tables, manifest)?;
        let name = self.saved.save(manifest)?;
        for old in replaced {
            self.saved.delete(old)?;
        }
        tracing::debug!("committed checkpoint {}", manifest.epoch);
        Ok(name)
    }

    fn partials(&self) -> Option<&str> {
        self.merger.as_ref().map(Merger::partials)
    }

    fn merge(&self, committed: Option<&Manifest>) -> Result<Option<Pass>, CommitError> {
        let Some(merger) = &self.merger else {
            return Ok(None);
        };
        if !merger.worth_a_look(committed) {
            return Ok(None);
        }
        let manifests: Vec<_> = self.saved.load()?.into_iter().map(|(_, m)| m).collect();
        let mut tables = self.tables();
        let merges = TableMerges::new(&mut tables, &self.group, &self.topic);
        Ok(Some(merger.pass(&manifests, &merges)?))
    }
}

/// The files of `manifest` that go into `dataset`'s table.
fn files_of(tables: &Tables, manifest: &Manifest, dataset: Dataset) -> Vec<WrittenFile> {
    manifest
        .files
        .iter()
        .filter(|f| tables.dataset_of(&f.key) == Some(dataset))
        .map(|f| WrittenFile {
            dataset,
            key: f.key.clone(),
            rows: f.rows,
            bytes: f.bytes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::checkpoint::StagedFile;
    use crate::storage::{Buckets, LocalStorage};

    fn buckets() -> Buckets {
        Buckets::new(["raw", "agg", "dlq"].map(String::from), "cp".into())
    }

    /// A processor's commit point on the tables under `root`.
    fn point(root: &Path) -> TableLog {
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(root).unwrap());
        let tables = Tables::open(super::super::TableRoot::Folder(root), &buckets()).unwrap();
        TableLog::new(tables, storage, "cp", "g", "t")
    }

    fn staged(point: &TableLog, key: &str, rows: u64) -> StagedFile {
        let bucket = key.split('/').next().unwrap();
        let mut file = point.storage.create(bucket).unwrap();
        std::io::Write::write_all(&mut file, b"rows").unwrap();
        let staged = file.stage().unwrap();
        StagedFile {
            staged: staged.id,
            key: key.into(),
            rows,
            bytes: staged.bytes,
        }
    }

    fn current(root: &Path, bucket: &str) -> Vec<String> {
        super::super::current_files(&super::super::TableRoot::Folder(root), bucket)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect()
    }

    fn take(point: &TableLog, partitions: &[i32]) -> Recovery {
        let recovery = point.recover(partitions).unwrap();
        point.complete(&recovery).unwrap();
        recovery
    }

    #[test]
    fn of_two_processors_that_took_the_same_partition_one_commits_and_the_other_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (point(dir.path()), point(dir.path()));
        let first = take(&a, &[0]);
        let second = take(&b, &[0]);
        assert_eq!(
            first.partitions, second.partitions,
            "both start from nothing"
        );
        let file = staged(&a, "raw/dt=2024-01-01/event_hour=00/part-a.parquet", 3);
        let by_a = Manifest::of_partition_0(first.epoch, "a", 10, vec![file]);
        a.commit(&by_a, &[]).unwrap();
        let file = staged(&b, "raw/dt=2024-01-01/event_hour=00/part-b.parquet", 3);
        let by_b = Manifest::of_partition_0(second.epoch, "b", 10, vec![file]);
        let err = b.commit(&by_b, &[]).unwrap_err();
        // The commit in the table is a's own, not b's: only a could have met itself.
        assert!(a.landed(&mut a.tables(), &by_a).unwrap());
        assert!(!b.landed(&mut b.tables(), &by_b).unwrap());
        let message = err.to_string();
        assert!(
            message.contains("partition 0 of t") && message.contains("another processor"),
            "{message}"
        );
        assert_eq!(
            current(dir.path(), "raw"),
            ["dt=2024-01-01/event_hour=00/part-a.parquet"],
            "only the first one's commit is in the table"
        );
        // The one that committed goes on committing.
        a.commit(
            &Manifest::of_partition_0(first.epoch + 1, "a", 20, Vec::new()),
            &[],
        )
        .unwrap();
    }

    #[test]
    fn a_commit_made_between_recovering_and_committing_fences_the_late_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (point(dir.path()), point(dir.path()));
        let first = take(&a, &[0]);
        a.commit(
            &Manifest::of_partition_0(first.epoch, "a", 10, Vec::new()),
            &[],
        )
        .unwrap();
        // b took the partition over from a's checkpoint, and commits; a, not knowing, tries.
        let second = take(&b, &[0]);
        assert_eq!(second.partitions[&0].next, 10);
        b.commit(
            &Manifest::of_partition_0(second.epoch, "b", 15, Vec::new()),
            &[],
        )
        .unwrap();
        let err = a
            .commit(
                &Manifest::of_partition_0(first.epoch + 1, "a", 20, Vec::new()),
                &[],
            )
            .unwrap_err();
        assert!(
            matches!(err, CommitError::Table(TableError::Fenced { .. })),
            "{err}"
        );
        assert_eq!(take(&point(dir.path()), &[0]).partitions[&0].next, 15);
    }

    #[test]
    fn a_checkpoint_its_writer_left_half_done_is_completed_once_by_the_next_owner() {
        let dir = tempfile::tempdir().unwrap();
        let a = point(dir.path());
        let recovery = take(&a, &[0]);
        let agg = staged(&a, "agg/dt=2024-01-01/part-w.parquet", 2);
        let dead = staged(&a, "dlq/part-d.parquet", 1);
        let m = Manifest::of_partition_0(recovery.epoch, "a", 10, vec![agg.clone(), dead.clone()]);
        // The first half of a commit, then the writer dies: the raw commit is in the log,
        // nothing is saved beside it and the other tables lack its files.
        for file in &m.files {
            a.storage.publish_staged(&file.staged, &file.key).unwrap();
        }
        {
            let mut tables = a.tables();
            let txn = Transaction::new(a.partition_app(0), m.epoch as i64);
            let info = serde_json::to_value(&m).unwrap();
            tables
                .append(Dataset::Raw, &[], vec![txn], Some(info))
                .unwrap();
        }
        drop(a);
        assert!(current(dir.path(), "agg").is_empty());

        let b = point(dir.path());
        let resumed = take(&b, &[0]);
        assert_eq!(
            resumed.partitions[&0].next, 10,
            "the state comes from the log"
        );
        assert!(resumed.epoch > m.epoch);
        assert_eq!(current(dir.path(), "agg"), ["dt=2024-01-01/part-w.parquet"]);
        assert_eq!(current(dir.path(), "dlq"), ["part-d.parquet"]);
        let saved: Vec<String> = b
            .saved
            .load()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            saved,
            [checkpoint::manifest_name(m.epoch, "a")],
            "now saved beside"
        );
        // Completing it again (another owner, or a restart) adds nothing twice.
        take(&point(dir.path()), &[0]);
        assert_eq!(current(dir.path(), "agg").len(), 1);
        assert_eq!(current(dir.path(), "dlq").len(), 1);
    }
}
