//! The group's partial counts → one row per (window, postcode) in the aggregated dataset:
//! the I/O of a merge planned by `merge` (docs/EXACTLY_ONCE.md, "One row per window").
//!
//! Any processor of the group may merge, and several may try the same windows at once. A
//! merge's commit point is its marker, `<checkpoints>/<group>/merged/<from>.json`, written
//! only if absent: of all who try to merge from `from`, exactly one writes it, and the rows
//! it names become the group's. The marker names the partial files it sums and the files it
//! writes, which are a function of those inputs; whoever finds a marker whose files are not
//! all published (its writer died) writes them again from its inputs, byte for byte the
//! same. Partial files are deleted only once every window in them is merged and written.

use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::CommitError;
use super::merge::{self, Horizon, PartialFile, Plan};
use crate::checkpoint::{CheckpointError, Manifest};
use crate::record::EventMs;
use crate::sink::{Finished, SinkConfig, Sinks, naming};
use crate::storage::Storage;
use crate::window::WindowSpec;

/// A merge's commit point: the windows starting in `[from, to)`, summed from `inputs` into
/// `outputs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    from: EventMs,
    to: EventMs,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

/// What one pass found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The group's windows are merged up to here (a window end; 0 before the first merge).
    pub merged_to: EventMs,
    pub horizon: Horizon,
    /// Rows this pass wrote, its own merge's or one it completed.
    pub rows: u64,
}

/// Merges one consumer group's windows.
pub struct Merger {
    storage: Arc<dyn Storage>,
    /// `<checkpoints>/<group>/partials`: the folder the group's partial counts go to.
    partials: String,
    /// `<checkpoints>/<group>/merged`: the markers.
    markers: String,
    spec: WindowSpec,
    /// How merged rows are written: into the aggregated dataset, named after the topic.
    output: SinkConfig,
    /// How far this processor knows the windows are merged and written: the next walk over
    /// the markers starts here.
    known: Mutex<Option<EventMs>>,
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
        let folder = format!("{checkpoints}/{}", naming::source_tag(group));
        output.tags = crate::sink::Tags::Fixed(naming::source_tag(topic));
        output.partials = None;
        Merger {
            storage,
            partials: format!("{folder}/partials"),
            markers: format!("{folder}/merged"),
            spec,
            output,
            known: Mutex::new(None),
        }
    }

    /// Where the group's processors publish their partial counts.
    pub fn partials(&self) -> &str {
        &self.partials
    }

    fn marker_key(&self, from: EventMs) -> String {
        format!("{}/{from:020}.json", self.markers)
    }

    /// Where a walk over the markers may start: the last merge this processor knows of.
    fn hint_key(&self) -> String {
        format!("{}/known.json", self.markers)
    }

    /// One pass: merges every window final for the group (as `manifests`, all the group's
    /// checkpoints, say) that is not merged yet, completes merges whose writer died, and
    /// deletes the partial files no merge needs any more.
    pub fn pass(&self, manifests: &[Manifest]) -> Result<Pass, CommitError> {
        let (mut merged_to, mut rows) = self.walk()?;
        let partials = self.published()?;
        let horizon = merge::horizon(manifests, &partials, &self.partials, merged_to);
        if let Some(plan) = merge::plan(merged_to, horizon.to, self.spec, &partials)
            && let Some(files) = self.write(&plan)?
        {
            let marker = Marker {
                from: plan.from,
                to: plan.to,
                inputs: plan.inputs,
                outputs: files.iter().map(|f| f.key.clone()).collect(),
            };
            let json = serde_json::to_vec(&marker).expect("a marker always serialises");
            if self.storage.put_new(&self.marker_key(marker.from), &json)? {
                for file in files {
                    rows += file.rows;
                    file.publish()?;
                }
                merged_to = marker.to;
                self.known(merged_to)?;
            } else {
                // Another processor merged from here first: its marker is the truth.
                drop(files);
                let (to, completed) = self.walk()?;
                (merged_to, rows) = (to, rows + completed);
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

    /// Whether `key` is a partial file every window of which is merged: a checkpoint that
    /// names it may find it deleted.
    pub fn merged(&self, key: &str) -> Result<bool, CommitError> {
        let Some(file) = key
            .strip_prefix(&self.partials)
            .and_then(|_| PartialFile::at(key))
        else {
            return Ok(false);
        };
        Ok(file.last < self.walk()?.0)
    }

    /// Follows the markers from the last merge this processor knows of to the newest,
    /// writing the files of any whose writer died before it published them. Returns where
    /// the windows are merged up to, and the rows it wrote.
    fn walk(&self) -> Result<(EventMs, u64), CommitError> {
        let known = *self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = match known {
            Some(at) => at,
            None => self.read::<EventMs>(&self.hint_key())?.unwrap_or(0),
        };
        let mut rows = 0;
        let mut moved = false;
        while let Some(marker) = self.read::<Marker>(&self.marker_key(at))? {
            rows += self.complete(&marker)?;
            at = marker.to;
            moved = true;
        }
        if moved || known.is_none() {
            self.known(at)?;
        }
        Ok((at, rows))
    }

    /// Remembers that the windows are merged and written up to `to`, here and for the next
    /// processor that starts.
    fn known(&self, to: EventMs) -> Result<(), CommitError> {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
        let json = serde_json::to_vec(&to).expect("a number always serialises");
        Ok(self.storage.put(&self.hint_key(), &json)?)
    }

    /// A small JSON object at `key`, `None` when there is none.
    fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CommitError> {
        let Some(bytes) = self.storage.get(key)? else {
            return Ok(None);
        };
        let parsed = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            key: key.into(),
            problem: e.to_string(),
        })?;
        Ok(Some(parsed))
    }

    /// Publishes the files of `marker` that are missing, written again from its inputs; the
    /// rows written.
    fn complete(&self, marker: &Marker) -> Result<u64, CommitError> {
        if self.all_exist(&marker.outputs)? {
            return Ok(0);
        }
        let plan = Plan {
            from: marker.from,
            to: marker.to,
            inputs: marker.inputs.clone(),
        };
        let Some(files) = self.write(&plan)? else {
            // An input is gone: its remover saw every output published first.
            return if self.all_exist(&marker.outputs)? {
                Ok(0)
            } else {
                Err(self.broken(marker, "an input is gone but not every output was written"))
            };
        };
        let keys: Vec<&String> = files.iter().map(|f| &f.key).collect();
        if keys != marker.outputs.iter().collect::<Vec<_>>() {
            return Err(self.broken(
                marker,
                &format!(
                    "its inputs give the files {keys:?} (a processor of another version or \
                     FILE_MAX_BYTES wrote it)"
                ),
            ));
        }
        let mut rows = 0;
        for file in files {
            rows += file.rows;
            file.publish()?;
        }
        Ok(rows)
    }

    fn broken(&self, marker: &Marker, problem: &str) -> CommitError {
        CheckpointError::Corrupt {
            key: self.marker_key(marker.from),
            problem: format!(
                "the merge names the files {:?}, but {problem}",
                marker.outputs
            ),
        }
        .into()
    }

    fn all_exist(&self, keys: &[String]) -> Result<bool, CommitError> {
        for key in keys {
            if !self.storage.exists(key)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The group's partial files, as published.
    fn published(&self) -> Result<Vec<PartialFile>, CommitError> {
        Ok(self
            .storage
            .list_files(&self.partials)?
            .iter()
            .filter_map(|f| PartialFile::at(&format!("{}/{}", self.partials, f.path)))
            .collect())
    }

    /// The files of `plan`'s rows, complete but not visible; `None` when one of its inputs
    /// is gone (merged and deleted by another processor meanwhile).
    fn write(&self, plan: &Plan) -> Result<Option<Vec<Finished>>, CommitError> {
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
