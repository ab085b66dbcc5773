//! What merging a consumer group's windows costs as the aggregated table's log grows between
//! its Delta checkpoints (one every 100 commits): a member of a group of one partition closes
//! a one-minute window of 50 postcodes at each checkpoint, and the merge after it commits
//! that window's rows to the aggregated table, 100 times, into tables in a temporary folder;
//! the mean merge of each ten is printed. `cargo bench --bench merge_commits`
//! (docs/PERFORMANCE.md, "Fencing, and a group's throughput").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::basic::Compression;

use pageview::checkpoint::{Manifest, PartitionState, VERSION};
use pageview::commit::{CommitPoint, Merger, TableLog, TableRoot, Tables};
use pageview::sink::{SinkConfig, Sinks, Tags};
use pageview::storage::{Buckets, LocalStorage, Storage};
use pageview::window::{ClosedWindow, WindowSpec};
use pageview::workers::Workers;

const TOPIC: &str = "pageview-events";
const T0: i64 = 1_700_000_040_000;
const MINUTE: i64 = 60_000;

fn main() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let buckets = Buckets::new(["raw", "agg", "dlq"].map(String::from), "cp".into());
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).expect("storage"));
    let tables = Tables::open(TableRoot::Folder(dir.path()), &buckets).expect("tables");
    let config = SinkConfig {
        buckets,
        tags: Tags::Fixed(String::new()),
        max_file_bytes: 128 << 20,
        max_file_age: Duration::from_secs(3600),
        compression: Compression::SNAPPY,
        partials: None,
        workers: Workers::none(),
    };
    let spec = WindowSpec::new(MINUTE);
    let merger = Merger::new(storage.clone(), "cp", "bench", TOPIC, spec, config.clone());
    // The member's closed windows: partial counts of its one partition.
    let member = SinkConfig {
        tags: Tags::Topic {
            topic: TOPIC.into(),
            partitions: vec![0],
        },
        partials: Some(merger.partials().into()),
        ..config
    };
    let point = TableLog::new(tables, storage.clone(), "cp", "bench", TOPIC).merged_by(merger);
    let recovery = point.recover(&[0]).expect("recovery");
    point.complete(&recovery).expect("completion");
    let mut replaced = Vec::new();
    let mut ten = Duration::ZERO;
    println!("merges since the table's Delta checkpoint | mean merge of the ten before");
    for n in 0..100_u64 {
        let start = T0 + n as i64 * MINUTE;
        let window = ClosedWindow {
            start,
            end: start + MINUTE,
            counts: (0..50).map(|i| (format!("P{i}").into(), i + 1)).collect(),
        };
        let mut sinks = Sinks::new(storage.clone(), &member);
        sinks.window(&window).expect("partial counts");
        sinks.finish_all().expect("partial counts");
        for file in sinks.take_finished() {
            file.publish().expect("partial counts published");
        }
        let state = PartitionState {
            next: n as i64 + 1,
            raw_from: n as i64 + 1,
            ..PartitionState::default()
        };
        let manifest = Manifest {
            version: VERSION,
            epoch: recovery.epoch + n,
            member: "bench".into(),
            topic: TOPIC.into(),
            topic_partitions: Some(1),
            watermark: Some(window.end),
            partitions: BTreeMap::from([(0, state)]),
            windows: Vec::new(),
            files: Vec::new(),
        };
        replaced = vec![point.commit(&manifest, &replaced).expect("a checkpoint")];
        let started = Instant::now();
        let pass = point.merge(Some(&manifest)).expect("a merge");
        ten += started.elapsed();
        let merged = pass.map(|p| (p.merged_to, p.rows));
        assert_eq!(merged, Some((window.end, 50)), "the window's rows merged");
        if n % 10 == 9 {
            println!("{:>3} | {:.2} ms", n + 1, ten.as_secs_f64() * 100.0);
            ten = Duration::ZERO;
        }
    }
}
