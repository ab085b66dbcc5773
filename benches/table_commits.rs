//! What a checkpoint's commit to Delta tables costs as the raw table's log grows between its
//! Delta checkpoints (one every 100 commits): one processor of three partitions commits 100
//! checkpoints into tables in a temporary folder; the mean time of each ten is printed.
//! `cargo bench --bench table_commits` (docs/PERFORMANCE.md, "Fencing's lookups").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pageview::checkpoint::{Manifest, PartitionState, VERSION};
use pageview::commit::{CommitPoint, TableLog, TableRoot, Tables};
use pageview::storage::{Buckets, LocalStorage, Storage};

fn main() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let buckets = Buckets::new(["raw", "agg", "dlq"].map(String::from), "cp".into());
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).expect("storage"));
    let tables = Tables::open(TableRoot::Folder(dir.path()), &buckets).expect("tables");
    let point = TableLog::new(tables, storage, "cp", "bench", "pageview-events");
    let partitions = [0, 1, 2];
    let recovery = point.recover(&partitions).expect("recovery");
    point.complete(&recovery).expect("completion");
    let mut replaced = Vec::new();
    let mut ten = Duration::ZERO;
    println!("commits since the table's Delta checkpoint | mean commit of the ten before");
    for n in 0..100_u64 {
        let manifest = Manifest {
            version: VERSION,
            epoch: recovery.epoch + n,
            member: "bench".into(),
            topic: "pageview-events".into(),
            topic_partitions: None,
            watermark: Some(n as i64 * 1000),
            partitions: partitions
                .iter()
                .map(|&p| {
                    let at = n as i64 * 1000;
                    let state = PartitionState {
                        next: at,
                        raw_from: at,
                        ..PartitionState::default()
                    };
                    (p, state)
                })
                .collect::<BTreeMap<_, _>>(),
            windows: Vec::new(),
            files: Vec::new(),
        };
        let started = Instant::now();
        replaced = vec![point.commit(&manifest, &replaced).expect("a commit")];
        ten += started.elapsed();
        if n % 10 == 9 {
            println!("{:>3} | {:.2} ms", n + 1, ten.as_secs_f64() * 100.0);
            ten = Duration::ZERO;
        }
    }
}
