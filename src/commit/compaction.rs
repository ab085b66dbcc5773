//! Which small files of a table are rewritten together (pure): the plan of a compaction,
//! whose commit removes the small files and adds the large ones with Delta's
//! `dataChange = false`, so a reader of the table sees the same rows before and after.

use std::collections::HashMap;

use crate::sink::naming;

/// One data file of a table's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its folder in the table: `dt=…/event_hour=…`, `dt=…`, or empty.
    pub partition: String,
    pub path: String,
    pub bytes: u64,
}

/// Files of one partition rewritten into one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub partition: String,
    pub inputs: Vec<Part>,
    pub bytes: u64,
}

/// Which partitions a compaction rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every partition with small files to pack: `pageview compact`, run by an operator.
    All,
    /// Beside a running processor. A partition no on-time row goes to any more (its event
    /// time ends at or before `watermark`) is packed as soon as it has small files to pack:
    /// late rows that land in it later are folded in by a later pass. One still receiving
    /// (the current hour, the dead-letter table) waits until it holds `open_files` small
    /// files, so that each pass does not rewrite it again for the few files since the last.
    Running {
        watermark: Option<i64>,
        open_files: usize,
    },
}

impl Policy {
    fn takes(&self, partition: &str, small_files: usize) -> bool {
        match *self {
            Policy::All => true,
            Policy::Running {
                watermark,
                open_files,
            } => {
                let closed = naming::partition_end(partition)
                    .zip(watermark)
                    .is_some_and(|(end, watermark)| end <= watermark);
                closed || small_files >= open_files
            }
        }
    }
}

/// Packs the files smaller than `target` bytes of each partition `policy` takes, in path
/// order (so in input order, as names hold positions), into groups of at most `target`
/// bytes; a file alone in its group stays as it is. Files of `target` or more are never
/// rewritten.
pub fn plan(files: &[Part], target: u64, policy: Policy) -> Vec<Merge> {
    let mut small_files: HashMap<&str, usize> = HashMap::new();
    for file in files.iter().filter(|f| f.bytes < target) {
        *small_files.entry(&file.partition).or_default() += 1;
    }
    let mut small: Vec<&Part> = files
        .iter()
        .filter(|f| f.bytes < target && policy.takes(&f.partition, small_files[&*f.partition]))
        .collect();
    small.sort_by(|a, b| (&a.partition, &a.path).cmp(&(&b.partition, &b.path)));
    let mut merges = Vec::new();
    let mut current: Option<Merge> = None;
    for part in small {
        let fits = current
            .as_ref()
            .is_some_and(|m| m.partition == part.partition && m.bytes + part.bytes <= target);
        if !fits {
            merges.extend(current.take().filter(|m| m.inputs.len() > 1));
            current = Some(Merge {
                partition: part.partition.clone(),
                inputs: Vec::new(),
                bytes: 0,
            });
        }
        let merge = current.as_mut().expect("just set");
        merge.inputs.push(part.clone());
        merge.bytes += part.bytes;
    }
    merges.extend(current.filter(|m| m.inputs.len() > 1));
    merges
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use proptest::prelude::*;

    fn part(partition: &str, path: &str, bytes: u64) -> Part {
        Part {
            partition: partition.into(),
            path: format!("{partition}/{path}"),
            bytes,
        }
    }

    #[test]
    fn small_files_of_a_partition_pack_into_target_sized_files() {
        let files = [
            part("dt=1/event_hour=00", "b", 40),
            part("dt=1/event_hour=00", "a", 50),
            part("dt=1/event_hour=00", "c", 30),
            part("dt=1/event_hour=00", "big", 100),
            part("dt=1/event_hour=01", "a", 10),
            part("dt=1/event_hour=02", "a", 10),
            part("dt=1/event_hour=02", "b", 10),
        ];
        let merges = plan(&files, 100, Policy::All);
        let inputs: Vec<Vec<&str>> = merges
            .iter()
            .map(|m| m.inputs.iter().map(|p| p.path.as_str()).collect())
            .collect();
        assert_eq!(
            inputs,
            [
                vec!["dt=1/event_hour=00/a", "dt=1/event_hour=00/b"],
                vec!["dt=1/event_hour=02/a", "dt=1/event_hour=02/b"],
            ],
            "c alone after a and b fill 90 of 100; big and hour 01's one file stay"
        );
        assert_eq!(merges[0].bytes, 90);
    }

    proptest! {
        #[test]
        fn every_file_is_in_at_most_one_merge_of_its_own_partition_within_the_target(
            files in proptest::collection::vec((0u8..3, 1u64..300), 0..60),
            target in 1u64..400,
        ) {
            let files: Vec<Part> = files
                .iter()
                .enumerate()
                .map(|(i, &(p, bytes))| part(&format!("p{p}"), &format!("{i:03}"), bytes))
                .collect();
            let merges = plan(&files, target, Policy::All);
            let mut seen = HashSet::new();
            for m in &merges {
                prop_assert!(m.inputs.len() > 1);
                prop_assert!(m.bytes <= target);
                for input in &m.inputs {
                    prop_assert!(seen.insert(input.path.clone()), "{} twice", input.path);
                    prop_assert!(files.contains(input), "{} is no file of the table", input.path);
                    prop_assert_eq!(&input.partition, &m.partition);
                    prop_assert!(input.bytes < target);
                }
                prop_assert_eq!(m.bytes, m.inputs.iter().map(|i| i.bytes).sum::<u64>());
            }
        }

        #[test]
        fn beside_a_processor_only_closed_or_crowded_partitions_are_packed(
            files in proptest::collection::vec((0i64..4, 1u64..50), 0..80),
            watermark in proptest::option::of(0i64..5),
            open_files in 2usize..20,
        ) {
            // Hours 0..4 of 2024-01-01; the watermark at the end of hour `watermark`.
            let files: Vec<Part> = files
                .iter()
                .enumerate()
                .map(|(i, &(h, bytes))| {
                    part(&format!("dt=2024-01-01/event_hour={h:02}"), &format!("{i:03}"), bytes)
                })
                .collect();
            let watermark = watermark.map(|h| JAN_1 + h * HOUR);
            let policy = Policy::Running { watermark, open_files };
            let merges = plan(&files, 1000, policy);
            let everything = plan(&files, 1000, Policy::All);
            for h in 0..4i64 {
                let partition = format!("dt=2024-01-01/event_hour={h:02}");
                let of = |merges: &[Merge]| merges.iter().filter(|m| m.partition == partition).cloned().collect::<Vec<_>>();
                let small = files.iter().filter(|f| f.partition == partition).count();
                let closed = watermark.is_some_and(|w| w >= JAN_1 + (h + 1) * HOUR);
                if closed || small >= open_files {
                    prop_assert_eq!(of(&merges), of(&everything), "{} is packed", partition);
                } else {
                    prop_assert!(of(&merges).is_empty(), "{} is left open", partition);
                }
            }
        }
    }

    const JAN_1: i64 = 1_704_067_200_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn the_dead_letter_table_never_closes_and_waits_for_enough_files() {
        let files: Vec<Part> = (0..5).map(|i| part("", &format!("{i}"), 10)).collect();
        let running = |open_files| Policy::Running {
            watermark: Some(i64::MAX),
            open_files,
        };
        assert!(plan(&files, 100, running(6)).is_empty());
        assert_eq!(plan(&files, 100, running(5))[0].inputs.len(), 5);
    }
}
