//! The group's partial counts → one row per (window, postcode) in the aggregated dataset:
//! the I/O of a merge planned by `merge` (docs/EXACTLY_ONCE.md, "One row per window").
//!
//! Any processor of the group may merge, and several may try the same windows at once. Each
//! merge commits through a [`MergeLog`] that takes one merge from any point exactly once: a
//! marker written only if absent beside Parquet folders (`markers`), or a Delta transaction
//! in the aggregated table (`table_log`). The files a merge writes are a function of the
//! partial files it sums, so whoever writes them again writes the same bytes. Partial files
//! are deleted only once every window in them is merged and written.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::CommitError;
use super::merge::{self, Horizon, PartialFile, Plan};
use crate::checkpoint::{CheckpointError, Manifest, StagedFile};
use crate::record::{EventMs, Partition};
use crate::sink::{Finished, SinkConfig, Sinks, Tags, naming};
use crate::storage::{Storage, StorageError};
use crate::window::WindowSpec;

/// Where a group's merges are committed.
pub trait MergeLog {
    /// How far the group's rows are merged, every merge up to there written in full (one a
    /// dead merger left half done is finished first, its files written again by `merger`).
    fn merged_to(&self, merger: &Merger) -> Result<EventMs, CommitError>;
    /// Makes `plan`'s rows, encoded in `files`, the group's, unless another merger committed
    /// a merge from `plan.from` first: then false, and `files` are dropped unseen.
    fn commit(
        &self,
        merger: &Merger,
        plan: Plan,
        files: Vec<Finished>,
    ) -> Result<bool, CommitError>;
}

/// `<checkpoints>/<group>`: where a group's checkpoints, partial counts and merge markers are.
pub(super) fn group_folder(checkpoints: &str, group: &str) -> String {
    format!("{checkpoints}/{}", naming::source_tag(group))
}

/// Where a group's processors publish their partial counts.
pub(super) fn partials_folder(group_folder: &str) -> String {
    format!("{group_folder}/partials")
}

/// The partial files published under `partials`, a group's folder of them.
pub(super) fn published_in(
    storage: &dyn Storage,
    partials: &str,
) -> Result<Vec<PartialFile>, CommitError> {
    Ok(storage
        .list_files(partials)?
        .iter()
        .filter_map(|f| PartialFile::at(&format!("{partials}/{}", f.path)))
        .collect())
}

/// What one pass found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The group's windows are merged up to here (a window end; 0 before the first merge).
    pub merged_to: EventMs,
    pub horizon: Horizon,
    /// Rows this pass's own merge wrote.
    pub rows: u64,
}

/// Merges one consumer group's windows.
pub struct Merger {
    storage: Arc<dyn Storage>,
    /// `<checkpoints>/<group>`: where the group's checkpoints are.
    folder: String,
    /// `<folder>/partials`: where the group's partial counts go.
    partials: String,
    spec: WindowSpec,
    /// How merged rows are written: into the aggregated dataset, named after the topic.
    output: SinkConfig,
    /// The window each partition of this processor's last checkpoint was final up to.
    looked: Mutex<Option<BTreeMap<Partition, Option<EventMs>>>>,
}

impl Merger {
    /// The merger of `group`'s windows of `topic`, whose checkpoints are in `checkpoints`.
    pub fn new(
        storage: Arc<dyn Storage>,
        checkpoints: &str,
        group: &str,
        topic: &str,
        spec: WindowSpec,
        mut output: SinkConfig,
    ) -> Self {
        let folder = group_folder(checkpoints, group);
        output.tags = Tags::Fixed(naming::source_tag(topic));
        output.partials = None;
        Merger {
            storage,
            partials: partials_folder(&folder),
            folder,
            spec,
            output,
            looked: Mutex::new(None),
        }
    }

    /// Whether a pass after `committed`, this processor's checkpoint, could merge anything
    /// (always when it was just given partitions: `None`). The group's horizon moves only
    /// when some partition's final time enters a new window or partial counts are published,
    /// and the processor whose checkpoint does that looks right after it; the others'
    /// checkpoints within a window (one every 10 s) need not list and read the group's
    /// checkpoints again.
    pub fn worth_a_look(&self, committed: Option<&Manifest>) -> bool {
        let Some(manifest) = committed else {
            return true;
        };
        let finals: BTreeMap<Partition, Option<EventMs>> = manifest
            .partitions
            .keys()
            .map(|&p| (p, manifest.final_to(p).map(|t| self.spec.start_of(t))))
            .collect();
        let mut looked = self.looked.lock().unwrap_or_else(|e| e.into_inner());
        let moved = looked.as_ref() != Some(&finals);
        *looked = Some(finals);
        moved
            || manifest
                .files
                .iter()
                .any(|f| f.key.starts_with(&self.partials))
    }

    /// Where the group's processors publish their partial counts.
    pub fn partials(&self) -> &str {
        &self.partials
    }

    /// The group's checkpoint folder, where merges may keep what they need.
    pub(super) fn folder(&self) -> &str {
        &self.folder
    }

    pub(super) fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    /// One pass: merges every window final for the group (as `manifests`, all the group's
    /// checkpoints, say) that is not merged yet, through `log`, and deletes the partial
    /// files no merge needs any more.
    pub fn pass(&self, manifests: &[Manifest], log: &dyn MergeLog) -> Result<Pass, CommitError> {
        let mut merged_to = log.merged_to(self)?;
        let partials = self.published()?;
        let horizon = merge::horizon(manifests, &partials, &self.partials, merged_to);
        let mut rows = 0;
        if let Some(plan) = merge::plan(merged_to, horizon.to, self.spec, &partials)
            && let Some(files) = self.write(&plan)?
        {
            let (to, written) = (plan.to, files.iter().map(|f| f.rows).sum());
            if log.commit(self, plan, files)? {
                (merged_to, rows) = (to, written);
            } else {
                merged_to = log.merged_to(self)?;
            }
        }
        for spent in merge::spent(&partials, merged_to) {
            self.storage.delete(&spent.key)?;
        }
        Ok(Pass {
            merged_to,
            horizon,
            rows,
        })
    }

    /// Publishes `file`, staged by a committed checkpoint, as recovery does (again, maybe).
    /// A partial file found neither staged nor published was published, merged (as `log`
    /// says) and deleted: nothing needs it any more.
    pub fn publish(&self, file: &StagedFile, log: &dyn MergeLog) -> Result<(), CommitError> {
        let Err(e) = self.storage.publish_staged(&file.staged, &file.key) else {
            return Ok(());
        };
        let partial = file
            .key
            .strip_prefix(&self.partials)
            .and_then(|_| PartialFile::at(&file.key));
        match (&e, partial) {
            (StorageError::StagedMissing { .. }, Some(p)) if p.last < log.merged_to(self)? => {
                Ok(())
            }
            _ => Err(e.into()),
        }
    }

    /// The group's partial files, as published.
    pub(super) fn published(&self) -> Result<Vec<PartialFile>, CommitError> {
        published_in(&*self.storage, &self.partials)
    }

    /// The files of `plan`'s rows, complete but not visible; `None` when one of its inputs
    /// is gone (merged and deleted by another processor meanwhile).
    pub(super) fn write(&self, plan: &Plan) -> Result<Option<Vec<Finished>>, CommitError> {
        let mut counts = Vec::new();
        for key in &plan.inputs {
            let Some(bytes) = self.storage.get(key)? else {
                return Ok(None);
            };
            read_counts(Bytes::from(bytes), key, &mut counts)?;
        }
        let windows = merge::sum(
            counts.iter().map(|(s, p, c)| (*s, p.as_str(), *c)),
            plan,
            self.spec,
        );
        let mut sinks = Sinks::new(self.storage.clone(), &self.output);
        for window in &windows {
            sinks.window(window)?;
        }
        sinks.finish_all()?;
        Ok(Some(sinks.take_finished()))
    }
}

/// Appends the (window start, postcode, count) rows of the partial file `bytes` (read from
/// `key`) to `counts`.
fn read_counts(
    bytes: Bytes,
    key: &str,
    counts: &mut Vec<(EventMs, String, i64)>,
) -> Result<(), CommitError> {
    let corrupt = |problem: String| CheckpointError::Corrupt {
        key: key.into(),
        problem,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| corrupt(e.to_string()))?;
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| corrupt(format!("no column {name}")))
        };
        let starts = column("window_start")?;
        let postcodes = column("postcode")?;
        let pageviews = column("pageview_count")?;
        let (Some(starts), Some(postcodes), Some(pageviews)) = (
            starts.as_primitive_opt::<TimestampMillisecondType>(),
            postcodes.as_string_opt::<i32>(),
            pageviews.as_primitive_opt::<Int64Type>(),
        ) else {
            return Err(corrupt("columns of unexpected types".into()).into());
        };
        for i in 0..batch.num_rows() {
            counts.push((
                starts.value(i),
                postcodes.value(i).to_string(),
                pageviews.value(i),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(in crate::commit) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::checkpoint::{Manifest, PartitionState, StagedFile};
    use crate::commit::markers::Markers;
    use crate::storage::{Buckets, LocalStorage};
    use crate::window::ClosedWindow;

    const T0: i64 = 1_700_000_040_000;

    pub(in crate::commit) fn output() -> SinkConfig {
        SinkConfig {
            buckets: Buckets::new(["raw", "agg", "dlq"].map(String::from), "cp".into()),
            tags: Tags::Fixed(String::new()),
            max_file_bytes: 128 << 20,
            max_file_age: Duration::from_secs(3600),
            compression: parquet::basic::Compression::SNAPPY,
            partials: None,
            workers: crate::workers::Workers::none(),
        }
    }

    /// A group of one partition whose member closed `windows`: its checkpoint, with the
    /// partial counts published.
    pub(in crate::commit) fn closed(
        storage: &Arc<dyn Storage>,
        merger: &Merger,
        windows: &[ClosedWindow],
    ) -> Manifest {
        let mut config = output();
        config.tags = Tags::Topic {
            topic: "t".into(),
            partitions: vec![0],
        };
        config.partials = Some(merger.partials().into());
        let mut sinks = Sinks::new(storage.clone(), &config);
        for window in windows {
            sinks.window(window).unwrap();
        }
        sinks.finish_all().unwrap();
        for file in sinks.take_finished() {
            file.publish().unwrap();
        }
        let mut m = Manifest::sample(3, "a", &[]);
        m.topic_partitions = Some(1);
        m.watermark = windows.last().map(|w| w.end);
        m.partitions.insert(0, PartitionState::default());
        m.files.clear();
        m
    }

    #[test]
    fn a_checkpoint_is_worth_a_look_when_a_partition_enters_a_window_or_counts_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let merger = Merger::new(storage, "cp", "g", "t", WindowSpec::new(60_000), output());
        let at = |watermark: i64| {
            let mut m = Manifest::sample(3, "a", &[(0, 10), (1, 10)]);
            m.watermark = Some(watermark);
            m.files.clear();
            m
        };
        assert!(merger.worth_a_look(None), "given partitions");
        assert!(
            merger.worth_a_look(Some(&at(T0 + 1_000))),
            "the first checkpoint"
        );
        assert!(
            !merger.worth_a_look(Some(&at(T0 + 30_000))),
            "within the window"
        );
        assert!(merger.worth_a_look(Some(&at(T0 + 60_000))), "into the next");
        let mut floored = at(T0 + 60_000);
        floored.partitions.get_mut(&1).unwrap().final_to = Some(T0 + 180_000);
        assert!(
            merger.worth_a_look(Some(&floored)),
            "a partition taken over"
        );
        let mut published = floored.clone();
        published.files = vec![StagedFile {
            key: format!("{}/dt=2023-11-14/part-t.p0-1-2.parquet", merger.partials()),
            ..StagedFile::default()
        }];
        assert!(merger.worth_a_look(Some(&published)));
        assert!(!merger.worth_a_look(Some(&floored)));
    }

    #[test]
    fn of_two_mergers_of_the_same_windows_at_the_same_moment_one_writes_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let spec = WindowSpec::new(60_000);
        let merger = |s: &Arc<dyn Storage>| Merger::new(s.clone(), "cp", "g", "t", spec, output());
        let (a, b) = (merger(&storage), merger(&storage));
        let manifest = closed(
            &storage,
            &a,
            &[
                ClosedWindow::minute(T0, &[("E1", 2), ("N1", 1)]),
                ClosedWindow::minute(T0 + 60_000, &[("E1", 5)]),
            ],
        );
        let (a_log, b_log) = (Markers::of(&a), Markers::of(&b));
        // Both plan and encode the same merge before either commits.
        let plan = |m: &Merger, log: &Markers| {
            let merged_to = log.merged_to(m).unwrap();
            let partials = m.published().unwrap();
            let horizon = merge::horizon(
                std::slice::from_ref(&manifest),
                &partials,
                m.partials(),
                merged_to,
            );
            let plan = merge::plan(merged_to, horizon.to, spec, &partials).unwrap();
            let files = m.write(&plan).unwrap().unwrap();
            (plan, files)
        };
        let (a_plan, a_files) = plan(&a, &a_log);
        let (b_plan, b_files) = plan(&b, &b_log);
        assert_eq!(a_plan, b_plan);
        assert!(a_log.commit(&a, a_plan, a_files).unwrap());
        assert!(
            !b_log.commit(&b, b_plan, b_files).unwrap(),
            "one commit per merge"
        );
        assert_eq!(b_log.merged_to(&b).unwrap(), T0 + 120_000);
        let rows: Vec<_> = storage.list_files("agg").unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let pass = b.pass(std::slice::from_ref(&manifest), &b_log).unwrap();
        assert_eq!((pass.merged_to, pass.rows), (T0 + 120_000, 0));
        assert!(
            storage.list_files(a.partials()).unwrap().is_empty(),
            "merged partial counts are deleted"
        );
        assert_eq!(
            storage.list_files("agg").unwrap(),
            rows,
            "nothing merged twice"
        );
    }

    #[test]
    fn a_merge_whose_merger_died_before_its_files_is_written_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let spec = WindowSpec::new(60_000);
        let a = Merger::new(storage.clone(), "cp", "g", "t", spec, output());
        let manifest = closed(&storage, &a, &[ClosedWindow::minute(T0, &[("E1", 2)])]);
        let partials = a.published().unwrap();
        let plan = merge::plan(0, Some(T0 + 60_000), spec, &partials).unwrap();
        let files = a.write(&plan).unwrap().unwrap();
        let outputs: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
        // Its marker is written, its files are not: the merger died between the two.
        let marker = serde_json::json!({
            "from": 0, "to": T0 + 60_000, "inputs": plan.inputs, "outputs": outputs,
        });
        let key = format!("cp/g/merged/{:020}.json", 0);
        assert!(
            storage
                .put_new(&key, marker.to_string().as_bytes())
                .unwrap()
        );
        drop(files);
        let b = Merger::new(storage.clone(), "cp", "g", "t", spec, output());
        let pass = b.pass(&[manifest], &Markers::of(&b)).unwrap();
        assert_eq!(pass.merged_to, T0 + 60_000);
        assert!(
            storage.exists(&outputs[0]).unwrap(),
            "written again: {outputs:?}"
        );
        assert!(storage.list_files(a.partials()).unwrap().is_empty());
    }
}
