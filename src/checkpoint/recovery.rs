//! Manifests → the state a processor resumes the partitions it was given from: the newest
//! saved state of each, the watermark and floors it resumes under, and which manifests its
//! first checkpoint supersedes (docs/EXACTLY_ONCE.md). Pure, as the rest of `checkpoint`.

use std::collections::BTreeMap;

use super::{Manifest, PartitionState, StagedFile};
use crate::record::{EventMs, Offset, Partition};
use crate::window::{EventClock, OpenCount, Watermarks, WindowSpec, Windows};

/// What the partitions a processor was just given resume from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovery {
    /// The epoch of this processor's next manifest: above every one found.
    pub epoch: u64,
    pub watermark: Option<EventMs>,
    /// Assigned partitions with a saved state; the others start at their beginning.
    pub partitions: BTreeMap<Partition, PartitionState>,
    pub windows: Vec<OpenCount>,
    /// The epoch of the manifest each assigned partition's state comes from.
    pub committed: BTreeMap<Partition, u64>,
    /// Those manifests, newest first.
    pub from: Vec<Manifest>,
    /// Staged files that may not be published yet: those of each member's newest manifest
    /// (a member publishes a manifest's files before it writes the next).
    pub unpublished: Vec<StagedFile>,
    /// Names of manifests whose every partition is assigned here: this processor's first
    /// manifest supersedes them.
    pub replaced: Vec<String>,
    /// Names of manifests no recovery can pick any more, deleted once the recovery is
    /// complete.
    pub superseded: Vec<String>,
    /// How many partitions the topic has, as the source learnt when it was assigned; saved
    /// in every checkpoint, for the group to know when a window is final in all of them.
    pub topic_partitions: Option<i32>,
    /// Windows ending by this are merged into the group's rows: final in every assigned
    /// partition, a partition new to the topic included ([`Recovery::merged_to`]).
    pub merged_to: Option<EventMs>,
}

impl Recovery {
    /// The group's rows are merged up to `merged_to`: no assigned partition may count in
    /// those windows any more. A partition the group has merged past already is final past
    /// it anyway; one new to the topic (or never checkpointed) would otherwise count its
    /// records in windows whose row is written, where nobody would merge them: they are
    /// late instead, once.
    pub fn merged_to(&mut self, merged_to: EventMs, assigned: &[Partition]) {
        self.merged_to = Some(merged_to);
        self.watermark = assigned.iter().map(|p| self.final_to(*p)).min().flatten();
    }

    /// How far `partition`'s windows are final as it resumes.
    fn final_to(&self, partition: Partition) -> Option<EventMs> {
        let saved = self.partitions.get(&partition).and_then(|s| s.final_to);
        saved.max(self.merged_to)
    }

    /// Where each assigned partition's reading starts: its raw cursor, or the beginning.
    pub fn start(&self, partition: Partition) -> Option<Offset> {
        self.partitions.get(&partition).map(|s| s.raw_from)
    }

    /// The window operator of `assigned` as the manifests left it.
    pub fn windows(
        &self,
        spec: WindowSpec,
        watermark_bound_ms: i64,
        assigned: &[Partition],
    ) -> Windows {
        let clocks: Vec<(Partition, EventClock)> = assigned
            .iter()
            .map(|p| {
                (
                    *p,
                    self.partitions
                        .get(p)
                        .map(PartitionState::clock)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let floors: Vec<(Partition, EventMs)> = assigned
            .iter()
            .filter_map(|&p| Some((p, self.final_to(p)?)))
            .collect();
        let watermarks = Watermarks::restore(watermark_bound_ms, self.watermark, &clocks, &floors);
        Windows::restore(spec, watermarks, &self.windows)
    }
}

/// The newest saved state of each partition in `assigned`, from all manifests of the group.
pub fn recover(manifests: &[Manifest], assigned: &[Partition]) -> Recovery {
    let mut recovery = Recovery {
        epoch: manifests.iter().map(|m| m.epoch + 1).max().unwrap_or(0),
        ..Recovery::default()
    };
    for &partition in assigned {
        let Some(newest) = manifests
            .iter()
            .filter(|m| m.partitions.contains_key(&partition))
            .max_by_key(|m| m.epoch)
        else {
            continue;
        };
        let mut state = newest.partitions[&partition].clone();
        state.final_to = newest.final_to(partition);
        recovery.partitions.insert(partition, state);
        recovery.committed.insert(partition, newest.epoch);
        if !recovery.from.iter().any(|m| m == newest) {
            recovery.from.push(newest.clone());
        }
        recovery.windows.extend(
            newest
                .windows
                .iter()
                .filter(|c| c.partition == partition)
                .cloned(),
        );
    }
    recovery.watermark = resumed_watermark(&recovery.partitions, assigned);
    let mut newest_of_member: BTreeMap<&str, &Manifest> = BTreeMap::new();
    for m in manifests {
        let entry = newest_of_member.entry(&m.member).or_insert(m);
        if m.epoch > entry.epoch {
            *entry = m;
        }
    }
    recovery.from.sort_by_key(|m| std::cmp::Reverse(m.epoch));
    recovery.unpublished = newest_of_member
        .into_values()
        .flat_map(|m| m.files.iter().cloned())
        .collect();
    recovery
}

/// The watermark a processor resumes `assigned` with: the lowest they were final up to (none
/// for a partition no checkpoint has). One processor's watermark can be far ahead of
/// another's (its own partitions read to the end while the other's waited for the group to
/// notice their owner was gone); resuming all under the highest would make the waiting
/// partitions' records late that their own owner would have counted. Each partition keeps
/// what it was final up to as its floor, so no window of it opens again.
fn resumed_watermark(
    partitions: &BTreeMap<Partition, PartitionState>,
    assigned: &[Partition],
) -> Option<EventMs> {
    assigned
        .iter()
        .map(|p| partitions.get(p).and_then(|s| s.final_to))
        .min()
        .flatten()
}

/// Manifests no recovery can pick any more: every partition in them is in a later manifest.
/// Their files are published: the writer publishes before its next manifest, and a new owner
/// recovers (publishing the last manifest's files) before its first.
pub fn superseded(manifests: &[Manifest]) -> Vec<usize> {
    (0..manifests.len())
        .filter(|&i| {
            let m = &manifests[i];
            m.partitions.keys().all(|p| {
                manifests
                    .iter()
                    .any(|o| o.epoch > m.epoch && o.partitions.contains_key(p))
            })
        })
        .collect()
}

/// Manifests a processor given `assigned` replaces with its first manifest: every partition
/// of theirs is now its own (and so in every manifest it writes).
pub fn replaced(manifests: &[(String, Manifest)], assigned: &[Partition]) -> Vec<String> {
    manifests
        .iter()
        .filter(|(_, m)| m.partitions.keys().all(|p| assigned.contains(p)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Sorts a group's `named` manifests for a processor given `assigned`: the names of those
/// no recovery can pick any more ([`superseded`]), and of those its first manifest replaces
/// ([`replaced`]) among the rest.
pub fn sort_out(
    named: Vec<(String, Manifest)>,
    assigned: &[Partition],
) -> (Vec<String>, Vec<String>) {
    let manifests: Vec<Manifest> = named.iter().map(|(_, m)| m.clone()).collect();
    let old = superseded(&manifests);
    let (gone, current): (Vec<_>, Vec<_>) = named
        .into_iter()
        .enumerate()
        .partition(|(i, _)| old.contains(i));
    let current: Vec<(String, Manifest)> = current.into_iter().map(|(_, n)| n).collect();
    (
        gone.into_iter().map(|(_, (name, _))| name).collect(),
        replaced(&current, assigned),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::VERSION;
    use proptest::prelude::*;

    fn manifest(epoch: u64, member: &str, partitions: &[(i32, i64)]) -> Manifest {
        Manifest::sample(epoch, member, partitions)
    }

    #[test]
    fn a_partition_new_to_the_group_counts_nothing_in_windows_already_merged() {
        // Partition 0 was checkpointed final up to 130 s; 1 was added to the topic since.
        let all = [manifest(130, "a", &[(0, 10)])];
        let mut r = recover(&all, &[0, 1]);
        assert_eq!(r.watermark, None, "partition 1 was never final anywhere");
        r.merged_to(60_000, &[0, 1]);
        assert_eq!(r.watermark, Some(60_000));
        let mut windows = r.windows(crate::window::WindowSpec::new(60_000), 5_000, &[0, 1]);
        assert!(
            matches!(
                windows.add(1, 59_999, None, "E1"),
                crate::window::Assignment::Late { .. }
            ),
            "its window's row is written: late, once"
        );
        assert_eq!(
            windows.add(1, 60_000, None, "E1"),
            crate::window::Assignment::OnTime
        );
        assert!(
            matches!(
                windows.add(0, 90_000, None, "E1"),
                crate::window::Assignment::Late { .. }
            ),
            "partition 0 keeps its own floor"
        );
    }

    #[test]
    fn each_partition_resumes_from_its_newest_manifest() {
        // a owned 0..=2, then b took partition 2 (and wrote later epochs).
        let all = [
            manifest(1, "a", &[(0, 10), (1, 10), (2, 10)]),
            manifest(2, "a", &[(0, 20), (1, 20), (2, 20)]),
            manifest(3, "b", &[(2, 25)]),
            manifest(4, "a", &[(0, 30), (1, 30)]),
        ];
        let r = recover(&all, &[1, 2, 5]);
        assert_eq!(r.epoch, 5);
        assert_eq!(r.partitions[&1].next, 30);
        assert_eq!(r.partitions[&2].next, 25);
        assert!(
            !r.partitions.contains_key(&5),
            "never seen: from the beginning"
        );
        assert_eq!(r.start(5), None);
        assert_eq!(r.watermark, None, "5 has nothing final yet");
        assert_eq!(
            recover(&all, &[1, 2]).watermark,
            Some(3000),
            "b's watermark: a's was ahead of partition 2"
        );
        let floors: Vec<_> = r.partitions.values().map(|s| s.final_to).collect();
        assert_eq!(
            floors,
            [Some(4000), Some(3000)],
            "each as far as it was final"
        );
        let counts: Vec<_> = r.windows.iter().map(|c| (c.partition, c.count)).collect();
        assert_eq!(counts, [(1, 30), (2, 25)]);
        let mut unpublished: Vec<_> = r.unpublished.iter().map(|f| f.key.as_str()).collect();
        unpublished.sort();
        assert_eq!(unpublished, ["k3", "k4"], "each member's newest manifest");
        assert_eq!(r.committed, BTreeMap::from([(1, 4), (2, 3)]));
        let from: Vec<u64> = r.from.iter().map(|m| m.epoch).collect();
        assert_eq!(
            from,
            [4, 3],
            "the manifests the states come from, newest first"
        );
        assert_eq!(
            superseded(&all),
            [0, 1],
            "a's older ones: every partition is later"
        );
        assert_eq!(recover(&[], &[0]), Recovery::default());
    }

    const MINUTE: i64 = 60_000;

    /// Routes `times` of partition `p` (postcode `P<p>`) into `ws`, collecting the windows
    /// that close as (start, postcode, count); whether each was late.
    fn feed(
        ws: &mut Windows,
        p: i32,
        times: &[i64],
        emitted: &mut Vec<(i64, String, i64)>,
    ) -> Vec<bool> {
        let postcode = format!("P{p}");
        let mut late = Vec::new();
        for &t in times {
            late.push(ws.add(p, t, None, &postcode) != crate::window::Assignment::OnTime);
            for w in ws.drain_final() {
                emitted.extend(w.counts.into_iter().map(|(c, n)| (w.start, c.into(), n)));
            }
        }
        late
    }

    /// The checkpoint of a processor that owned partition `p` alone and routed `next` of it.
    fn checkpoint_of(ws: &Windows, epoch: u64, p: i32, next: usize) -> Manifest {
        let clock = ws
            .watermarks()
            .clocks()
            .find(|&(q, _)| q == p)
            .map(|(_, c)| c);
        let state = PartitionState {
            next: next as i64,
            raw_from: next as i64,
            clock: clock.and_then(|c| c.time()),
            recent: clock.map(|c| c.recent()).unwrap_or_default(),
            record_max_ms: clock.and_then(|c| c.record_max()),
            final_to: ws
                .watermarks()
                .floors()
                .find(|&(q, _)| q == p)
                .map(|(_, f)| f),
            ..PartitionState::default()
        };
        Manifest {
            version: VERSION,
            epoch,
            member: format!("m{p}"),
            topic: "t".into(),
            topic_partitions: None,
            watermark: ws.watermark(),
            partitions: BTreeMap::from([(p, state)]),
            windows: ws.open_counts(),
            files: Vec::new(),
        }
    }

    /// A partition's events: about in order (within the 5 s bound), now and then one ten
    /// minutes late.
    fn stream() -> impl Strategy<Value = Vec<i64>> {
        proptest::collection::vec((1_000i64..40_000, 0i64..4_000, 0u8..20), 0..120).prop_map(
            |steps| {
                let mut t = 100 * MINUTE;
                steps
                    .into_iter()
                    .map(|(step, jitter, late)| {
                        t += step;
                        if late == 0 {
                            t - 10 * MINUTE
                        } else {
                            t - jitter
                        }
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// Two processors each owned one partition and got as far as they got; a third takes
        /// both over from their checkpoints. No window of a partition closes twice, no record
        /// is late there that its own owner would have counted, and every record is counted
        /// or late exactly once.
        #[test]
        fn partitions_taken_over_from_two_processors_stay_exactly_once(
            streams in [stream(), stream()],
            cuts in (0usize..=120, 0usize..=120),
        ) {
            let cuts = [cuts.0.min(streams[0].len()), cuts.1.min(streams[1].len())];
            let new = || Windows::new(WindowSpec::new(MINUTE), 5_000);
            let mut emitted = Vec::new();
            let mut manifests = Vec::new();
            let mut alone = Vec::new();
            let mut late = 0;
            for p in 0..2 {
                let times = &streams[p];
                let mut owner = new();
                owner.register(p as i32);
                late += feed(&mut owner, p as i32, &times[..cuts[p]], &mut emitted)
                    .into_iter()
                    .filter(|&l| l)
                    .count();
                manifests.push(checkpoint_of(&owner, p as u64 + 1, p as i32, cuts[p]));
                let mut whole = new();
                whole.register(p as i32);
                alone.push(feed(&mut whole, p as i32, times, &mut Vec::new()));
            }
            let recovery = recover(&manifests, &[0, 1]);
            let mut taker = recovery.windows(WindowSpec::new(MINUTE), 5_000, &[0, 1]);
            let longest = streams.iter().map(Vec::len).max().unwrap();
            for i in 0..longest {
                for p in 0..2 {
                    if i < cuts[p] || i >= streams[p].len() {
                        continue;
                    }
                    let judged = feed(&mut taker, p as i32, &streams[p][i..=i], &mut emitted)[0];
                    prop_assert!(
                        !judged || alone[p][i],
                        "record {} of partition {} is late here, not at its owner", i, p
                    );
                    late += usize::from(judged);
                }
            }
            for w in taker.drain_all() {
                emitted.extend(w.counts.into_iter().map(|(c, n)| (w.start, c.into(), n)));
            }
            let mut closed = std::collections::HashSet::new();
            for (start, postcode, _) in &emitted {
                prop_assert!(closed.insert((start, postcode)), "window {} of {} closed twice", start, postcode);
            }
            let counted: i64 = emitted.iter().map(|(_, _, n)| n).sum();
            prop_assert_eq!(counted as usize + late, streams[0].len() + streams[1].len());
        }
    }
}
