//! Merges committed beside Parquet folders: a marker per merge,
//! `<checkpoints>/<group>/merged/<from>.json`, written only if absent (docs/EXACTLY_ONCE.md,
//! "One row per window").
//!
//! Of all who try to merge from `from`, exactly one writes its marker, and the rows it names
//! become the group's. The marker names the partial files it sums and the files it writes;
//! whoever finds a marker whose files are not all published (its writer died) writes them
//! again from its inputs. Markers are never deleted, so no merger that slept through a merge
//! can write one from the same point again.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::CommitError;
use super::merge::Plan;
use super::merger::{MergeLog, Merger};
use crate::checkpoint::CheckpointError;
use crate::record::EventMs;
use crate::sink::Finished;
use crate::storage::Storage;

/// A merge's commit point: the windows starting in `[from, to)`, summed from `inputs` into
/// `outputs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    from: EventMs,
    to: EventMs,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

/// The markers of one group's merges.
pub struct Markers {
    /// `<checkpoints>/<group>/merged`.
    folder: String,
    /// How far this processor knows the windows are merged and written: the next walk over
    /// the markers starts here.
    known: Mutex<Option<EventMs>>,
}

impl Markers {
    /// The markers of the group `merger` merges.
    pub fn of(merger: &Merger) -> Self {
        Self::in_group(merger.folder())
    }

    /// The markers of the group whose checkpoints are in `group_folder`.
    pub fn in_group(group_folder: &str) -> Self {
        Markers {
            folder: format!("{group_folder}/merged"),
            known: Mutex::new(None),
        }
    }

    fn key(&self, from: EventMs) -> String {
        format!("{}/{from:020}.json", self.folder)
    }

    /// Where a walk over the markers may start: the last merge some processor knew of.
    fn hint_key(&self) -> String {
        format!("{}/known.json", self.folder)
    }

    /// Remembers that the windows are merged and written up to `to`, here and for the next
    /// processor that starts.
    fn known(&self, storage: &dyn Storage, to: EventMs) -> Result<(), CommitError> {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
        let json = serde_json::to_vec(&to).expect("a number always serialises");
        Ok(storage.put(&self.hint_key(), &json)?)
    }

    /// Publishes the files of `marker` that are missing, written again from its inputs.
    fn complete(&self, merger: &Merger, marker: &Marker) -> Result<(), CommitError> {
        let storage = merger.storage();
        if all_exist(storage, &marker.outputs)? {
            return Ok(());
        }
        let plan = Plan {
            from: marker.from,
            to: marker.to,
            inputs: marker.inputs.clone(),
        };
        let Some(files) = merger.write(&plan)? else {
            // An input is gone: its remover saw every output published first.
            return if all_exist(storage, &marker.outputs)? {
                Ok(())
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
        for file in files {
            file.publish()?;
        }
        Ok(())
    }

    fn broken(&self, marker: &Marker, problem: &str) -> CommitError {
        CheckpointError::Corrupt {
            key: self.key(marker.from),
            problem: format!(
                "the merge names the files {:?}, but {problem}",
                marker.outputs
            ),
        }
        .into()
    }
}

impl Markers {
    /// How far the group's merges are committed, as markers say, without writing anything
    /// (a merge whose files are not all written yet counts): for recovery, which only reads.
    pub fn committed_to(&self, storage: &dyn Storage) -> Result<EventMs, CommitError> {
        Ok(self.follow(storage, |_| Ok(()))?.0)
    }

    /// Follows the markers from the last merge this processor knows of (or, new, the one
    /// the hint names) to the newest, handing each to `each`: where they end, and whether
    /// that is news to this processor.
    fn follow(
        &self,
        storage: &dyn Storage,
        mut each: impl FnMut(&Marker) -> Result<(), CommitError>,
    ) -> Result<(EventMs, bool), CommitError> {
        let known = *self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut news = known.is_none();
        let mut at = match known {
            Some(at) => at,
            None => read::<EventMs>(storage, &self.hint_key())?.unwrap_or(0),
        };
        while let Some(marker) = read::<Marker>(storage, &self.key(at))? {
            each(&marker)?;
            at = marker.to;
            news = true;
        }
        Ok((at, news))
    }
}

impl MergeLog for Markers {
    /// Follows the markers from the last merge this processor knows of to the newest,
    /// writing the files of any whose writer died before it published them.
    fn merged_to(&self, merger: &Merger) -> Result<EventMs, CommitError> {
        let (at, news) = self.follow(merger.storage(), |marker| self.complete(merger, marker))?;
        if news {
            self.known(merger.storage(), at)?;
        }
        Ok(at)
    }

    fn commit(
        &self,
        merger: &Merger,
        plan: Plan,
        files: Vec<Finished>,
    ) -> Result<bool, CommitError> {
        let storage = merger.storage();
        let marker = Marker {
            from: plan.from,
            to: plan.to,
            inputs: plan.inputs,
            outputs: files.iter().map(|f| f.key.clone()).collect(),
        };
        let json = serde_json::to_vec(&marker).expect("a marker always serialises");
        if !storage.put_new(&self.key(marker.from), &json)? {
            return Ok(false);
        }
        for file in files {
            file.publish()?;
        }
        self.known(storage, marker.to)?;
        Ok(true)
    }
}

fn all_exist(storage: &dyn Storage, keys: &[String]) -> Result<bool, CommitError> {
    for key in keys {
        if !storage.exists(key)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A small JSON object at `key`, `None` when there is none.
fn read<T: serde::de::DeserializeOwned>(
    storage: &dyn Storage,
    key: &str,
) -> Result<Option<T>, CommitError> {
    let Some(bytes) = storage.get(key)? else {
        return Ok(None);
    };
    let parsed = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
        key: key.into(),
        problem: e.to_string(),
    })?;
    Ok(Some(parsed))
}
