//! Which small files of a table are rewritten together (pure): the plan of a compaction,
//! whose commit removes the small files and adds the large ones with Delta's
//! `dataChange = false`, so a reader of the table sees the same rows before and after.

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

/// Packs each partition's files smaller than `target` bytes, in path order (so in input
/// order, as names hold positions), into groups of at most `target` bytes; a file alone in
/// its group stays as it is. Files of `target` or more are never rewritten.
pub fn plan(files: &[Part], target: u64) -> Vec<Merge> {
    let mut small: Vec<&Part> = files.iter().filter(|f| f.bytes < target).collect();
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
        let merges = plan(&files, 100);
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
            let merges = plan(&files, target);
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
    }
}
