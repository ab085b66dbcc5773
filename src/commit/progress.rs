//! A consumer group's progress, read without writing anything (for `inspect`): how far its
//! rows are merged, how far its windows are final, and which partition, of which member,
//! holds them back (docs/EXACTLY_ONCE.md, "One row per window").

use std::sync::Arc;

use super::CommitError;
use super::delta::{TableRoot, has_table, merge_app, txn_version};
use super::manifests::Manifests;
use super::markers::Markers;
use super::merge::{self, Horizon};
use super::merger::{group_folder, partials_folder, published_in};
use crate::record::{EventMs, Partition};
use crate::storage::Storage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProgress {
    pub group: String,
    pub topic: String,
    /// Windows ending by this have their one row (0: none yet).
    pub merged_to: EventMs,
    /// How far the group's windows are final, and what holds them back.
    pub horizon: Horizon,
    /// Each partition of the topic, as the group's newest checkpoint holding it has it.
    pub partitions: Vec<PartitionProgress>,
    /// Partial count files published and not merged yet.
    pub partial_files: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: Partition,
    /// The member whose checkpoint holds it; `None` before its first checkpoint.
    pub member: Option<String>,
    /// How far its windows are final there.
    pub final_to: Option<EventMs>,
}

/// The progress of `group` reading `topic`, whose checkpoints are in the `checkpoints`
/// bucket; its merges are committed to `aggregated`'s Delta table when that bucket holds one
/// (under `tables`), else by markers beside the checkpoints. `None` when the group has no
/// committed checkpoint.
pub fn group_progress(
    storage: Arc<dyn Storage>,
    checkpoints: &str,
    group: &str,
    topic: &str,
    tables: &TableRoot<'_>,
    aggregated: &str,
) -> Result<Option<GroupProgress>, CommitError> {
    let manifests = Manifests::new(storage.clone(), checkpoints, group, topic);
    let folder = group_folder(checkpoints, group);
    let delta = has_table(tables, aggregated)?;
    let (committed, merged_to) = if delta {
        // A checkpoint is saved beside the tables only once its raw commit is in.
        let saved = manifests.load()?.into_iter().map(|(_, m)| m).collect();
        let app = merge_app(group, topic);
        (saved, txn_version(tables, aggregated, &app)?.unwrap_or(0))
    } else {
        let merged_to = Markers::in_group(&folder).committed_to(&*storage)?;
        (manifests.committed_checkpoints()?, merged_to)
    };
    if committed.is_empty() {
        return Ok(None);
    }
    let partials = partials_folder(&folder);
    let published = published_in(&*storage, &partials)?;
    let horizon = merge::horizon(&committed, &published, &partials, merged_to);
    let count = committed.iter().filter_map(|m| m.topic_partitions).max();
    let partitions = (0..count.unwrap_or(0))
        .map(|partition| {
            let found = merge::partition_final(&committed, partition);
            PartitionProgress {
                partition,
                member: found.map(|(m, _)| m.member.clone()),
                final_to: found.and_then(|(_, to)| to),
            }
        })
        .collect();
    Ok(Some(GroupProgress {
        group: group.into(),
        topic: topic.into(),
        merged_to,
        horizon,
        partitions,
        partial_files: published.len(),
    }))
}
