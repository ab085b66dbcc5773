//! Which windows a consumer group may merge into one row per (window, postcode), and from
//! which files (pure): the plan of a merge, which `merger` carries out
//! (docs/EXACTLY_ONCE.md, "One row per window").
//!
//! Each processor publishes the windows its own watermark closes as partial counts over the
//! partitions it owns, named in its checkpoint. A window is final for the group once every
//! partition of the topic is final past its end in its newest checkpoint, and every partial
//! file a checkpoint names is published: from then on no partial count of it can appear, so
//! the sum of those published is its count, whoever merges it and however often they try.

use std::collections::{BTreeMap, HashSet};

use crate::checkpoint::Manifest;
use crate::record::{EventMs, Partition};
use crate::sink::naming;
use crate::window::{ClosedWindow, WindowSpec};

/// A published file of partial counts: one processor's rows of the windows it closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialFile {
    pub key: String,
    /// The first and last window start in it.
    pub first: EventMs,
    pub last: EventMs,
}

impl PartialFile {
    /// The file at `key`, from its name (`part-<tag>-<first window>-<last window>.parquet`);
    /// `None` for a file not named so.
    pub fn at(key: &str) -> Option<Self> {
        let name = key.rsplit('/').next()?;
        let (first, last) = naming::positions(name)?;
        Some(PartialFile {
            key: key.into(),
            first,
            last,
        })
    }
}

/// How far the group's windows are final, and what holds it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Horizon {
    /// Every window ending at or before this is final in every partition of the topic and
    /// its partial counts are published; `None` while some partition has never been final.
    pub to: Option<EventMs>,
    pub held: Option<Hold>,
}

/// What holds the group's horizon back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// No checkpoint says how many partitions the topic has.
    NoTopic,
    /// No checkpoint has the partition yet: nobody has read it, or its first reader has not
    /// checkpointed.
    Unclaimed { partition: Partition },
    /// The partition's newest checkpoint, by `member`, is final up to `final_to`.
    Partition {
        partition: Partition,
        member: String,
        final_to: Option<EventMs>,
    },
    /// `member` checkpointed partial counts it has not published yet.
    Unpublished { member: String, key: String },
}

/// As the status page says it: what `inspect` prints after "held back by".
impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::NoTopic => f.write_str("the topic's partition count, not known yet"),
            Hold::Unclaimed { partition } => write!(f, "partition {partition}, no checkpoint yet"),
            Hold::Partition {
                partition, member, ..
            } => write!(f, "partition {partition} ({member})"),
            Hold::Unpublished { member, key } => write!(f, "{member}'s unpublished counts ({key})"),
        }
    }
}

/// How far the group's windows are final, from every checkpoint of the group and the partial
/// files published (`published`, keys under `partials`), once they are merged up to
/// `merged_to`. A partition is final up to the watermark of its newest checkpoint, or the
/// floor it came with when that is higher, and never past the start of a window of it that
/// checkpoint still holds open.
pub fn horizon(
    manifests: &[Manifest],
    published: &[PartialFile],
    partials: &str,
    merged_to: EventMs,
) -> Horizon {
    let held = |hold| Horizon {
        to: None,
        held: Some(hold),
    };
    let Some(count) = manifests.iter().filter_map(|m| m.topic_partitions).max() else {
        return held(Hold::NoTopic);
    };
    let mut lowest: Option<(Option<EventMs>, Hold)> = None;
    for partition in 0..count {
        let Some((newest, final_to)) = partition_final(manifests, partition) else {
            return held(Hold::Unclaimed { partition });
        };
        if lowest.as_ref().is_none_or(|(to, _)| final_to < *to) {
            let hold = Hold::Partition {
                partition,
                member: newest.member.clone(),
                final_to,
            };
            lowest = Some((final_to, hold));
        }
    }
    let (mut to, mut hold) = lowest.expect("a topic has at least one partition");
    let published: HashSet<&str> = published.iter().map(|p| p.key.as_str()).collect();
    for m in manifests {
        for file in &m.files {
            if !file.key.starts_with(partials) || published.contains(file.key.as_str()) {
                continue;
            }
            // Its windows start at `first`: those ending by then are not in it. One whose
            // windows are all merged was published, and deleted since.
            let (first, last) = PartialFile::at(&file.key)
                .map_or((EventMs::MIN, EventMs::MAX), |p| (p.first, p.last));
            if last < merged_to {
                continue;
            }
            if to.is_none_or(|to| first < to) {
                to = Some(first);
                hold = Hold::Unpublished {
                    member: m.member.clone(),
                    key: file.key.clone(),
                };
            }
        }
    }
    Horizon {
        to,
        held: Some(hold),
    }
}

/// The newest of `manifests` holding `partition`, and how far the partition's windows are
/// final in it: its watermark (or floor), but never past a window of it still open there.
/// `None` when no checkpoint holds the partition.
pub fn partition_final(
    manifests: &[Manifest],
    partition: Partition,
) -> Option<(&Manifest, Option<EventMs>)> {
    let newest = manifests
        .iter()
        .filter(|m| m.partitions.contains_key(&partition))
        .max_by_key(|m| m.epoch)?;
    let open = newest.windows.iter().filter(|c| c.partition == partition);
    let final_to = match open.map(|c| c.window_start).min() {
        Some(start) => newest.final_to(partition).map(|t| t.min(start)),
        None => newest.final_to(partition),
    };
    Some((newest, final_to))
}

/// One merge: the windows starting in `[from, to)`, summed from `inputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub from: EventMs,
    pub to: EventMs,
    pub inputs: Vec<String>,
}

/// The next merge after the group's rows are merged up to `merged_to` (a window end, or 0),
/// when the group's windows are final up to `horizon`; `None` when no final window has a
/// partial count to merge.
pub fn plan(
    merged_to: EventMs,
    horizon: Option<EventMs>,
    spec: WindowSpec,
    partials: &[PartialFile],
) -> Option<Plan> {
    // Windows are aligned, so the last one ending by the horizon ends at this.
    let to = spec.start_of(horizon?);
    if to <= merged_to {
        return None;
    }
    let mut inputs: Vec<String> = partials
        .iter()
        .filter(|p| p.first < to && p.last >= merged_to)
        .map(|p| p.key.clone())
        .collect();
    if inputs.is_empty() {
        return None;
    }
    inputs.sort();
    Some(Plan {
        from: merged_to,
        to,
        inputs,
    })
}

/// The partial files whose every window is merged once the rows are merged up to
/// `merged_to`: no merge reads them again.
pub fn spent(partials: &[PartialFile], merged_to: EventMs) -> Vec<&PartialFile> {
    partials.iter().filter(|p| p.last < merged_to).collect()
}

/// The group's rows of the windows of `plan`: the partial counts (window start, postcode,
/// count) summed per (window, postcode), in window then postcode order.
pub fn sum<'a>(
    partial_counts: impl IntoIterator<Item = (EventMs, &'a str, i64)>,
    plan: &Plan,
    spec: WindowSpec,
) -> Vec<ClosedWindow> {
    let mut windows: BTreeMap<EventMs, BTreeMap<&str, i64>> = BTreeMap::new();
    for (start, postcode, count) in partial_counts {
        if (plan.from..plan.to).contains(&start) {
            *windows
                .entry(start)
                .or_default()
                .entry(postcode)
                .or_default() += count;
        }
    }
    windows
        .into_iter()
        .map(|(start, counts)| ClosedWindow {
            start,
            end: start + spec.size_ms(),
            counts: counts
                .into_iter()
                .map(|(postcode, count)| (postcode.into(), count))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{PartitionState, StagedFile};
    use crate::window::OpenCount;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_700_000_040_000;
    const PARTIALS: &str = "cp/g/partials";

    fn partial(tag: &str, first: i64, last: i64) -> PartialFile {
        PartialFile::at(&naming::key(
            PARTIALS,
            &naming::date_partition(first),
            &naming::file_name(tag, first, last),
        ))
        .unwrap()
    }

    /// A checkpoint of `member` at `epoch` whose watermark is `watermark`, holding
    /// `partitions` (partition, final_to above the watermark) of a topic of `count`.
    fn checkpoint(
        epoch: u64,
        member: &str,
        watermark: Option<i64>,
        partitions: &[(i32, Option<i64>)],
        count: i32,
    ) -> Manifest {
        let mut m = Manifest::sample(epoch, member, &[]);
        m.topic_partitions = Some(count);
        m.watermark = watermark;
        m.files.clear();
        m.partitions = partitions
            .iter()
            .map(|&(p, final_to)| {
                let state = PartitionState {
                    final_to,
                    ..PartitionState::default()
                };
                (p, state)
            })
            .collect();
        m
    }

    #[test]
    fn the_group_is_final_where_its_least_final_partition_is() {
        let a = checkpoint(4, "a", Some(T0 + 5 * MIN), &[(0, None), (1, None)], 3);
        let b = checkpoint(5, "b", Some(T0 + 2 * MIN + 7), &[(2, None)], 3);
        let h = horizon(&[a.clone(), b.clone()], &[], PARTIALS, 0);
        assert_eq!(h.to, Some(T0 + 2 * MIN + 7));
        assert_eq!(
            h.held,
            Some(Hold::Partition {
                partition: 2,
                member: "b".into(),
                final_to: Some(T0 + 2 * MIN + 7),
            })
        );
        let plan = plan(
            T0,
            h.to,
            WindowSpec::new(MIN),
            &[partial("x", T0, T0 + 4 * MIN)],
        );
        assert_eq!(
            plan.unwrap().to,
            T0 + 2 * MIN,
            "windows ending by the horizon"
        );

        // Partition 2 taken over by a, which came with b's floor: its newest checkpoint.
        let a2 = checkpoint(
            6,
            "a",
            Some(T0 + MIN),
            &[(0, None), (1, None), (2, Some(T0 + 2 * MIN + 7))],
            3,
        );
        assert_eq!(
            horizon(&[a, b, a2], &[], PARTIALS, 0).to,
            Some(T0 + MIN),
            "a's own watermark went back to where its slowest partition is"
        );
    }

    #[test]
    fn an_unclaimed_partition_or_an_unknown_topic_holds_everything() {
        let a = checkpoint(4, "a", Some(T0), &[(0, None), (1, None)], 3);
        let h = horizon(std::slice::from_ref(&a), &[], PARTIALS, 0);
        assert_eq!(
            (h.to, h.held),
            (None, Some(Hold::Unclaimed { partition: 2 }))
        );
        let mut unknown = a;
        unknown.topic_partitions = None;
        assert_eq!(
            horizon(&[unknown], &[], PARTIALS, 0).held,
            Some(Hold::NoTopic)
        );
        let grown = checkpoint(5, "b", Some(T0), &[(2, None)], 4);
        let old = checkpoint(4, "a", Some(T0), &[(0, None), (1, None)], 3);
        assert_eq!(
            horizon(&[old, grown], &[], PARTIALS, 0).held,
            Some(Hold::Unclaimed { partition: 3 }),
            "the most partitions any member saw"
        );
    }

    #[test]
    fn partial_counts_not_yet_published_hold_their_windows_back() {
        let file = partial("t.p0", T0 + MIN, T0 + 3 * MIN);
        let mut a = checkpoint(4, "a", Some(T0 + 10 * MIN), &[(0, None)], 1);
        a.files = vec![
            StagedFile {
                staged: "s".into(),
                key: file.key.clone(),
                ..StagedFile::default()
            },
            StagedFile {
                staged: "r".into(),
                key: "raw/dt=2023-11-14/part-t.p0-0-9.parquet".into(),
                ..StagedFile::default()
            },
        ];
        let h = horizon(std::slice::from_ref(&a), &[], PARTIALS, 0);
        assert_eq!(
            h.to,
            Some(T0 + MIN),
            "windows before the file's first are whole"
        );
        assert!(matches!(h.held, Some(Hold::Unpublished { .. })));
        let h = horizon(
            std::slice::from_ref(&a),
            std::slice::from_ref(&file),
            PARTIALS,
            0,
        );
        assert_eq!(h.to, Some(T0 + 10 * MIN), "raw files are no partial counts");
        let h = horizon(&[a], &[], PARTIALS, T0 + 4 * MIN);
        assert_eq!(h.to, Some(T0 + 10 * MIN), "merged, then deleted");
    }

    #[test]
    fn a_window_a_checkpoint_holds_open_is_not_final_whatever_its_watermark() {
        let mut a = checkpoint(4, "a", Some(T0 + 10 * MIN), &[(0, None), (1, None)], 2);
        a.windows = vec![OpenCount {
            window_start: T0 + 2 * MIN,
            partition: 1,
            postcode: "E1".into(),
            count: 3,
        }];
        let h = horizon(&[a], &[], PARTIALS, 0);
        assert_eq!(h.to, Some(T0 + 2 * MIN));
        assert!(matches!(h.held, Some(Hold::Partition { partition: 1, .. })));
    }

    #[test]
    fn a_plan_reads_every_file_with_a_window_in_it_and_nothing_else() {
        let spec = WindowSpec::new(MIN);
        let files = [
            partial("a", T0, T0 + MIN),
            partial("b", T0 + 2 * MIN, T0 + 5 * MIN),
            partial("c", T0 + 6 * MIN, T0 + 6 * MIN),
        ];
        let plan = plan(T0 + 2 * MIN, Some(T0 + 6 * MIN + 59_999), spec, &files).unwrap();
        assert_eq!((plan.from, plan.to), (T0 + 2 * MIN, T0 + 6 * MIN));
        assert_eq!(plan.inputs, [files[1].key.clone()]);
        assert_eq!(spent(&files, plan.to), [&files[0], &files[1]]);
        assert!(super::plan(T0 + 6 * MIN, Some(T0 + 6 * MIN), spec, &files).is_none());
        assert!(
            super::plan(T0 + 7 * MIN, Some(T0 + 9 * MIN), spec, &files).is_none(),
            "final windows without counts: nothing to write"
        );
    }

    #[test]
    fn the_sum_is_one_row_per_window_and_postcode_of_the_plan() {
        let plan = Plan {
            from: T0,
            to: T0 + 2 * MIN,
            inputs: Vec::new(),
        };
        let rows = sum(
            [
                (T0, "SW19", 2),
                (T0 + MIN, "E1", 1),
                (T0, "E1", 4),
                (T0, "SW19", 3),
                (T0 + 2 * MIN, "E1", 9),
                (T0 - MIN, "E1", 9),
            ],
            &plan,
            WindowSpec::new(MIN),
        );
        assert_eq!(
            rows,
            [
                ClosedWindow::minute(T0, &[("E1", 4), ("SW19", 5)]),
                ClosedWindow::minute(T0 + MIN, &[("E1", 1)]),
            ]
        );
    }
}
