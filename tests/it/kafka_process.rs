//! `pageview process --bootstrap-servers` against a real Apache Kafka broker: every record
//! once in raw or the DLQ (checked by offset), exact window counts, through kill -9 of the
//! processor and bad records.
//!
//! The test data's correct output does not depend on how partitions interleave: within a
//! partition events are in order up to a few seconds (inside the watermark bound), so none is
//! late whatever the others do. The late ones are ten minutes before the start, and are
//! produced only once a first part of every partition has been processed and checkpointed,
//! so the watermark is past them whatever order the rest is read in. Three far-ahead events
//! per partition at the end (enough for the partition's clock to follow) close every window
//! before them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::kafka::Broker;
use crate::common::s3::LocalStack;
use crate::common::*;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use pageview::generate::now_ms;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

const TOPIC: &str = "pageview-events";
const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
const POSTCODES: [&str; 5] = ["SW19", "E1", "W1", "N1", "B1"];

/// What one produced record must become.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// A raw row with this user id, counted in (window start, postcode) unless late.
    Valid {
        user_id: i64,
        counted: Option<(i64, &'static str)>,
    },
    /// A DLQ row of this kind (late events are also `Valid` rows in raw).
    Dead(&'static str),
}

/// One produced record: its value (`None` is a null value) and what it must become (a late
/// event becomes two things).
type Produced = (Option<Vec<u8>>, Vec<Fate>);

/// Records per partition, in produce order.
struct Data {
    partitions: Vec<Vec<Produced>>,
}

impl Data {
    fn new(per_partition: usize) -> Data {
        Data::with_pages(per_partition, 0)
    }

    /// As [`Data::new`], with every valid event's webpage `extra` characters longer (a long
    /// query string), so raw files grow by about that many bytes a row.
    fn with_pages(per_partition: usize, extra: usize) -> Data {
        let bad: [(Option<&[u8]>, &str); 8] = [
            (Some(b"not json at all"), "invalid_json"),
            (None, "invalid_json"),
            (Some(b"{\"user_id\":1,\"postcode\":\"E1\",\"timestamp\":1700000000000}"), "missing_field"),
            (Some(b"{\"user_id\":\"7\",\"postcode\":\"E1\",\"webpage\":\"https://a\",\"timestamp\":1700000000000}"), "wrong_type"),
            (Some(b"{\"user_id\":0,\"postcode\":\"E1\",\"webpage\":\"https://a\",\"timestamp\":1700000000000}"), "invalid_user_id"),
            (Some(b"{\"user_id\":3,\"postcode\":\"e1\",\"webpage\":\"https://a\",\"timestamp\":1700000000000}"), "invalid_postcode"),
            (Some(b"{\"user_id\":3,\"postcode\":\"E1\",\"webpage\":\"ftp://a\",\"timestamp\":1700000000000}"), "invalid_webpage"),
            (Some(b"\xff\xfe{}"), "invalid_utf8"),
        ];
        // An hour, so raw files of two event hours are open at once around 23:00, and late
        // events land in the hour before while the next one is open.
        let span = 60 * MINUTE;
        let partitions = (0..3)
            .map(|p: i64| {
                let mut records = Vec::new();
                for i in 0..per_partition as i64 {
                    let user_id = p * 10_000_000 + i + 1;
                    // In order up to 3 s: inside the 5 s watermark bound.
                    let t = T0 + i * span / per_partition as i64 - (i % 7) * 500;
                    let postcode = POSTCODES[((i * 7 + p) % 5) as usize];
                    let late = i > FIRST as i64 && i % 97 == 0;
                    let t = if late {
                        T0 - 10 * MINUTE - (i % 60) * 1000
                    } else {
                        t
                    };
                    let mut fates = vec![Fate::Valid {
                        user_id,
                        counted: (!late).then(|| (t.div_euclid(MINUTE) * MINUTE, postcode)),
                    }];
                    if late {
                        fates.push(Fate::Dead("late_event"));
                    }
                    records.push((Some(event(user_id, postcode, t, extra)), fates));
                    if i % 499 == 250 {
                        let (payload, kind) = bad[(i as usize / 499 + p as usize) % bad.len()];
                        records.push((payload.map(<[u8]>::to_vec), vec![Fate::Dead(kind)]));
                    }
                }
                // A huge value: 600 KB that is not JSON.
                let mut huge = b"{\"user_id\":".to_vec();
                huge.resize(600_000, b'9');
                records.push((Some(huge), vec![Fate::Dead("invalid_json")]));
                // Far ahead, three times: the partition's clock follows (a lone event it would
                // not), which closes every window before them; theirs stays open.
                for k in 0..3 {
                    let user_id = p * 10_000_000 + 9_999_997 + k;
                    records.push((
                        Some(event(user_id, "SW19", T0 + 120 * MINUTE + k * 1_000, 0)),
                        vec![Fate::Valid {
                            user_id,
                            counted: None,
                        }],
                    ));
                }
                records
            })
            .collect();
        Data { partitions }
    }

    /// Produces the records at `range` of every partition's list, in order. The producer is
    /// healed as the generator's is, since one made just after a broker outage can forget
    /// every broker (src/kafka/rebootstrap.rs).
    fn produce(&self, bootstrap: &str, range: std::ops::Range<usize>, pace: Duration) {
        let producer: BaseProducer<Watched> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("statistics.interval.ms", pageview::kafka::STATS_INTERVAL_MS)
            .create_with_context(Watched::default())
            .unwrap();
        let heal = || producer.context().0.heal(producer.client(), bootstrap);
        let longest = self.partitions.iter().map(Vec::len).max().unwrap();
        for i in range.start..range.end.min(longest) {
            for (p, records) in self.partitions.iter().enumerate() {
                let Some((payload, _)) = records.get(i) else {
                    continue;
                };
                let mut record = BaseRecord::<(), [u8]>::to(TOPIC).partition(p as i32);
                if let Some(payload) = payload {
                    record = record.payload(payload);
                }
                let mut record = record;
                while let Err((e, back)) = producer.send(record) {
                    assert!(
                        e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "{e}"
                    );
                    record = back;
                    producer.poll(Duration::from_millis(10));
                    heal();
                }
            }
            producer.poll(Duration::ZERO);
            if i % 1000 == 999 {
                std::thread::sleep(pace);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while producer.flush(Duration::from_secs(1)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the broker took nothing for 120 s"
            );
            heal();
        }
        let refused = producer.context().1.lock().unwrap().take();
        assert_eq!(refused, None, "a test record was refused");
    }

    fn valid(&self) -> usize {
        self.fates()
            .filter(|(_, _, f)| matches!(f, Fate::Valid { .. }))
            .count()
    }

    fn dead(&self) -> usize {
        self.fates()
            .filter(|(_, _, f)| matches!(f, Fate::Dead(_)))
            .count()
    }

    /// (partition, offset, fate) of every record: offsets count from 0 in produce order.
    fn fates(&self) -> impl Iterator<Item = (i32, i64, &Fate)> {
        self.partitions.iter().enumerate().flat_map(|(p, records)| {
            records
                .iter()
                .enumerate()
                .flat_map(move |(o, (_, fates))| fates.iter().map(move |f| (p as i32, o as i64, f)))
        })
    }
}

/// Lets the test's producer see when it has forgotten every broker, and keeps the first
/// record the broker refused.
#[derive(Default)]
struct Watched(
    pageview::kafka::BrokerWatch,
    std::sync::Mutex<Option<String>>,
);

impl ClientContext for Watched {
    fn stats_raw(&self, statistics: &[u8]) {
        self.0.observe(statistics);
    }
}

impl ProducerContext for Watched {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut first = self.1.lock().unwrap();
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Records of each partition produced, and processed, before the rest: no late or bad ones.
const FIRST: usize = 200;

/// Produces the first records and waits until the processor has published them all, so the
/// watermark has passed the late events before any is produced.
fn produce_first(data: &Data, bootstrap: &str, storage: &Store) {
    data.produce(bootstrap, 0..FIRST, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(storage.path(), RAW) < 3 * FIRST {
        assert!(
            Instant::now() < deadline,
            "the first records were not processed in 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A valid event; its webpage has a query of `extra` hex digits that do not compress.
fn event(user_id: i64, postcode: &str, t: i64, extra: usize) -> Vec<u8> {
    let mut query = String::with_capacity(extra + 16);
    let mut x = user_id as u64;
    while query.len() < extra {
        // splitmix64: a different, incompressible digit string per user id.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        query.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    query.truncate(extra);
    format!(
        r#"{{"user_id":{user_id},"postcode":"{postcode}","webpage":"https://www.website.com/index.html?q={query}","timestamp":{t}}}"#
    )
    .into_bytes()
}

/// What most tests here start from: a broker holding the empty topic, the records to produce
/// to it (`per_partition` to each partition), and an empty storage folder.
fn given(per_partition: usize) -> (Broker, Data, Store) {
    let broker = Broker::start();
    create_topic(&broker.bootstrap);
    (broker, Data::new(per_partition), Store::local())
}

/// Where a test's processors write and where it reads back: a folder, or LocalStack's
/// buckets mirrored into one, so every check reads local files either way.
struct Store {
    dir: tempfile::TempDir,
    s3: Option<LocalStack>,
}

impl Store {
    fn local() -> Store {
        Store {
            dir: tempfile::tempdir().unwrap(),
            s3: None,
        }
    }

    /// LocalStack with the pipeline's buckets.
    fn s3() -> Store {
        Store {
            dir: tempfile::tempdir().unwrap(),
            s3: Some(LocalStack::with_buckets()),
        }
    }

    /// The folder holding everything published so far (and staged, in `.staging`).
    fn path(&self) -> &Path {
        if let Some(s3) = &self.s3 {
            s3.mirror(&[RAW, AGGREGATED, DLQ], self.dir.path());
        }
        self.dir.path()
    }

    /// `pageview process` writing here.
    fn command(&self) -> Command {
        let mut command = pageview();
        command.arg("process");
        match &self.s3 {
            Some(s3) => s3.env(command.args(["--storage", "s3"])),
            None => command.args(["--storage", self.dir.path().to_str().unwrap()]),
        };
        command
    }
}

fn create_topic(bootstrap: &str) {
    create_topic_with(bootstrap, TOPIC, &[]);
}

/// Creates `name` with 3 partitions and the topic settings `config`.
fn create_topic_with(bootstrap: &str, name: &str, config: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut topic = NewTopic::new(name, 3, TopicReplication::Fixed(1));
    for &(key, value) in config {
        topic = topic.set(key, value);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

/// A running processor; killed by PID when dropped, so a failing test leaves none behind.
/// Its stderr goes to a log (every run of one storage appends to the same), shown when a
/// test fails.
struct Processor {
    child: Option<Child>,
    log: PathBuf,
    /// Processors before this one that wrote to the same log and joined their group.
    joined_before: usize,
}

/// What a processor logs once it has joined its group, long after it handles signals.
const JOINED: &str = "pageview: consuming ";

impl Processor {
    /// kill -9, as a crash would.
    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGSTOP: it stops answering anyone (a long GC pause, a suspended VM) without dying.
    fn freeze(&self) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: signals the child we spawned, by its PID.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }

    /// SIGCONT: a frozen one goes on where it stopped, not knowing the group moved on.
    fn thaw(&self) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: signals the child we spawned, by its PID.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for it to exit by itself; fails with `still_runs` after `within`.
    fn exit_within(&mut self, within: Duration, still_runs: &str) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{still_runs}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("processor log {}:\n{}", self.log.display(), self.log());
        }
    }
}

fn processor(bootstrap: &str, storage: &Store, extra: &[&str]) -> Processor {
    member(bootstrap, storage, "test-processor", extra)
}

/// A processor with its own static member id in the group.
fn member(bootstrap: &str, storage: &Store, id: &str, extra: &[&str]) -> Processor {
    let log = storage.dir.path().join(format!("{id}.log"));
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let idle: &[&str] = if extra.contains(&"--idle-timeout") {
        &[]
    } else {
        &["--idle-timeout", "10m"]
    };
    let child = storage
        .command()
        .args(idle)
        .args([
            "--bootstrap-servers",
            bootstrap,
            "--checkpoint-interval-ms",
            "300",
            "--group-instance-id",
            id,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let joined_before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches(JOINED)
        .count();
    Processor {
        child: Some(child),
        log,
        joined_before,
    }
}

/// Raw user ids and DLQ (partition, offset, kind) rows, as published so far.
fn outputs(root: &Path) -> (Vec<i64>, Vec<(i32, i64, String)>) {
    let raw = read_dataset(root, RAW)
        .iter()
        .flat_map(|(_, b)| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    let dead = read_dataset(root, DLQ)
        .iter()
        .flat_map(|(_, b)| {
            let kinds = b.column(1).as_string::<i32>();
            let partitions = b.column(6).as_primitive::<Int32Type>();
            let offsets = b.column(7).as_primitive::<Int64Type>();
            (0..b.num_rows())
                .map(|i| {
                    (
                        partitions.value(i),
                        offsets.value(i),
                        kinds.value(i).to_string(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (raw, dead)
}

/// The flags that make the datasets Delta tables, compacted by the processor while it runs
/// (a pass every 200 ms, so that kills, rebalances and outages meet compactions).
const DELTA: &[&str] = &["--table-format", "delta", "--compact-interval-ms", "200"];

/// What readers see now holds no raw row or dead letter twice (a record may still be
/// missing: the processor was stopped before committing it).
fn assert_nothing_twice(root: &Path) {
    let (raw, dead) = outputs(root);
    let raw_set: HashSet<&i64> = raw.iter().collect();
    assert_eq!(raw.len(), raw_set.len(), "a raw row twice");
    let dead_set: HashSet<_> = dead.iter().collect();
    assert_eq!(dead.len(), dead_set.len(), "a dead letter twice");
}

/// Waits until every record is in raw or the DLQ (or the deadline passes).
fn wait_for_everything(storage: &Store, data: &Data, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (raw, dead) = outputs(storage.path());
        if raw.len() >= data.valid() && dead.len() >= data.dead() {
            return;
        }
        if Instant::now() >= deadline {
            let got: HashSet<(i32, i64)> = dead.iter().map(|(p, o, _)| (*p, *o)).collect();
            let missing: Vec<_> = data
                .fates()
                .filter(|(p, o, f)| matches!(f, Fate::Dead(_)) && !got.contains(&(*p, *o)))
                .take(10)
                .collect();
            panic!(
                "after {within:?}: {} of {} raw rows, {} of {} dead letters; missing: {missing:?}",
                raw.len(),
                data.valid(),
                dead.len(),
                data.dead()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Stops the processor as an operator would, and checks it said so cleanly. Only once it has
/// joined: a SIGTERM before the process even handles signals ends it as SIGTERM ends any.
/// Waits until `processor` has joined its group and consumes.
fn joined(processor: &Processor) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while processor.log().matches(JOINED).count() <= processor.joined_before {
        assert!(
            Instant::now() < deadline,
            "never joined: {}",
            processor.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut processor: Processor) -> String {
    joined(&processor);
    let pid = processor.child.as_ref().unwrap().id();
    // SAFETY: signals the child we spawned, by its PID.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    processor.exit_within(Duration::from_secs(30), "no exit 30 s after SIGTERM");
    let output = processor.child.take().unwrap().wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        processor.log()
    );
    stdout(&output)
}

/// Everything exactly once: raw by user id, the DLQ by (partition, offset, kind), window
/// counts against the expectation, one row per (window, postcode) however many processors.
fn assert_exactly_once(root: &Path, data: &Data) {
    let (mut raw, dead) = outputs(root);
    let mut want_raw: Vec<i64> = data
        .fates()
        .filter_map(|(_, _, f)| match f {
            Fate::Valid { user_id, .. } => Some(*user_id),
            Fate::Dead(_) => None,
        })
        .collect();
    raw.sort_unstable();
    want_raw.sort_unstable();
    let raw_set: HashSet<i64> = raw.iter().copied().collect();
    let missing = want_raw.iter().filter(|u| !raw_set.contains(u)).count();
    assert_eq!(
        (raw.len() - raw_set.len(), missing),
        (0, 0),
        "raw: (duplicated, lost) rows"
    );
    assert_eq!(raw, want_raw);

    let mut dead = dead;
    dead.sort();
    let mut want_dead: Vec<(i32, i64, String)> = data
        .fates()
        .filter_map(|(p, o, f)| match f {
            Fate::Dead(kind) => Some((p, o, kind.to_string())),
            Fate::Valid { .. } => None,
        })
        .collect();
    want_dead.sort();
    let mut seen = HashSet::new();
    let twice: Vec<_> = dead.iter().filter(|d| !seen.insert(*d)).take(10).collect();
    let missing: Vec<_> = want_dead
        .iter()
        .filter(|d| !seen.contains(d))
        .take(10)
        .collect();
    assert_eq!(
        dead.len(),
        want_dead.len(),
        "dead letters once each: twice {twice:?}, missing {missing:?}"
    );
    assert!(
        dead == want_dead,
        "each dead letter at its coordinates with its kind"
    );

    let mut want_counts: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for (_, _, fate) in data.fates() {
        if let Fate::Valid {
            counted: Some((window, postcode)),
            ..
        } = fate
        {
            *want_counts
                .entry((*window, postcode.to_string()))
                .or_default() += 1;
        }
    }
    assert_eq!(rows_by_key(root), want_counts, "window counts");
}

/// The aggregated dataset's rows by (window start, postcode), with their counts; a key in
/// two rows fails the test.
fn rows_by_key(root: &Path) -> BTreeMap<(i64, String), i64> {
    let mut rows = BTreeMap::new();
    for (start, counts) in window_counts(root) {
        for (postcode, count) in counts {
            assert!(
                rows.insert((start, postcode.clone()), count).is_none(),
                "one row per (window, postcode): {start} {postcode} twice"
            );
        }
    }
    rows
}

#[test]
fn three_partitions_end_to_end_with_bad_records() {
    let (broker, data, storage) = given(20_000);
    let extra = ["--file-max-age-ms", "700"];
    let child = processor(&broker.bootstrap, &storage, &extra);
    produce_first(&data, &broker.bootstrap, &storage);
    data.produce(&broker.bootstrap, FIRST..usize::MAX, Duration::ZERO);
    wait_for_everything(&storage, &data, Duration::from_secs(120));
    let summary = stop(child);
    assert!(summary.contains("records"), "{summary}");
    assert_exactly_once(storage.path(), &data);
    assert_no_staging_leftovers(storage.path());
    // Raw files hold one partition each, named after it.
    for file in parquet_files(&storage.path().join(RAW)) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("part-pageview_events.p"), "{name}");
    }
    // A restart finds nothing new to do and writes nothing twice.
    let child = processor(&broker.bootstrap, &storage, &extra);
    std::thread::sleep(Duration::from_secs(5));
    stop(child);
    assert_exactly_once(storage.path(), &data);
}

#[test]
fn kill_9_at_random_moments_loses_and_repeats_nothing() {
    kill_9_at_random_moments(&[]);
}

/// The tables stay readable between kills, and hold no row twice at any moment.
#[test]
fn kill_9_at_random_moments_loses_and_repeats_nothing_in_delta_tables() {
    kill_9_at_random_moments(DELTA);
}

fn kill_9_at_random_moments(format: &[&str]) {
    let (broker, data, storage) = given(60_000);
    let bootstrap = broker.bootstrap.clone();
    let data = std::sync::Arc::new(data);
    // Raw files roll by age within the time between kills: with late events in the hour
    // before, a file published above the raw cursor is common, and a kill then replays rows
    // some of which are already published (they must not be written again).
    let extra = [&["--file-max-age-ms", "1000"][..], format].concat();
    let mut child = Some(processor(&broker.bootstrap, &storage, &extra));
    produce_first(&data, &broker.bootstrap, &storage);
    let producer = {
        let data = data.clone();
        std::thread::spawn(move || {
            data.produce(&bootstrap, FIRST..usize::MAX, Duration::from_millis(400))
        })
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut kills = 0;
    let started = Instant::now();
    while kills < 15 {
        let child = child
            .take()
            .unwrap_or_else(|| processor(&broker.bootstrap, &storage, &extra));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(700 + rng % 2300));
        child.kill();
        kills += 1;
        if format == DELTA {
            assert_nothing_twice(storage.path());
        }
    }
    producer.join().unwrap();
    let child = processor(&broker.bootstrap, &storage, &extra);
    wait_for_everything(&storage, &data, Duration::from_secs(180));
    stop(child);
    eprintln!(
        "chaos: {kills} kill -9 in {:.0} s; {} records, {} raw rows, {} dead letters: 0 lost, 0 duplicated",
        started.elapsed().as_secs_f64(),
        data.fates().count(),
        data.valid(),
        data.dead()
    );
    assert_exactly_once(storage.path(), &data);
    assert_no_staging_leftovers(storage.path());
}

/// Kills during a compaction. A processor with compaction off leaves a backlog of small files;
/// processors that compact are then started and frozen (SIGSTOP) as soon as they say they
/// are rewriting files: one that is still rewriting, not yet committed, is killed there.
/// After every kill each table is readable and holds every record once; a last processor
/// compacts the closed hours into one file each and loses nothing.
#[test]
fn kill_9_during_a_compaction_leaves_every_table_whole() {
    let (broker, data, storage) = given(20_000);
    let rolling = ["--file-max-age-ms", "50", "--table-format", "delta"];
    let off = [&rolling[..], &["--compact-interval-ms", "0"]].concat();
    let child = processor(&broker.bootstrap, &storage, &off);
    produce_first(&data, &broker.bootstrap, &storage);
    // Over 6 s, so that files roll by age many times (how many depends on the machine).
    data.produce(
        &broker.bootstrap,
        FIRST..usize::MAX,
        Duration::from_millis(300),
    );
    wait_for_everything(&storage, &data, Duration::from_secs(120));
    stop(child);
    let raw_files = || table_files(storage.path(), RAW).unwrap();
    let backlog = raw_files().len();
    assert!(backlog > 10, "a backlog of small files: {backlog}");

    let on = [
        &rolling[..],
        &["--compact-interval-ms", "50"],
        &["--log-level", "warn,pageview=info,pageview::commit=debug"],
    ]
    .concat();
    let mut killed_while_compacting = 0;
    for attempt in 1.. {
        assert!(attempt <= 20, "no kill landed in a compaction in 20 tries");
        if kill_between(
            &broker.bootstrap,
            &storage,
            &on,
            "compacting ",
            "compacted ",
        ) {
            killed_while_compacting += 1;
        }
        assert_exactly_once(storage.path(), &data);
        if killed_while_compacting == 3 {
            eprintln!("compaction chaos: 3 of {attempt} kills landed while files were rewritten");
            break;
        }
    }
    let child = processor(&broker.bootstrap, &storage, &on);
    let closed = [
        "dt=2023-11-14/event_hour=22/",
        "dt=2023-11-14/event_hour=23/",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let files = raw_files();
        let per_hour = closed.map(|h| files.iter().filter(|f| f.path.starts_with(h)).count());
        if per_hour == [1, 1] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed hours hold {per_hour:?} files"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(child);
    assert_exactly_once(storage.path(), &data);
    assert_no_staging_leftovers(storage.path());
}

/// Kills during a checkpoint's commit to the tables: processors are frozen (SIGSTOP) as soon
/// as they say they are committing a checkpoint, and killed there, while the stream goes on;
/// three of the kills land before the commit was through (before, between or after the raw
/// commit, the aggregated and DLQ ones and the saved manifest). After each one the tables hold
/// nothing twice, and in the end everything once.
#[test]
fn kill_9_during_a_table_commit_loses_and_repeats_nothing() {
    let (broker, data, storage) = given(30_000);
    let bootstrap = broker.bootstrap.clone();
    let data = std::sync::Arc::new(data);
    let extra = [
        "--file-max-age-ms",
        "200",
        "--table-format",
        "delta",
        "--log-level",
        "warn,pageview=info,pageview::commit=debug",
    ];
    let child = processor(&broker.bootstrap, &storage, &extra);
    produce_first(&data, &broker.bootstrap, &storage);
    stop(child);
    let producer = {
        let data = data.clone();
        std::thread::spawn(move || {
            data.produce(&bootstrap, FIRST..usize::MAX, Duration::from_millis(300))
        })
    };
    let mut killed_while_committing = 0;
    for attempt in 1.. {
        assert!(attempt <= 20, "no kill landed in a commit in 20 tries");
        if kill_between(
            &broker.bootstrap,
            &storage,
            &extra,
            "committing checkpoint",
            "committed checkpoint",
        ) {
            killed_while_committing += 1;
        }
        assert_nothing_twice(storage.path());
        if killed_while_committing == 3 {
            eprintln!("commit chaos: 3 of {attempt} kills landed inside a commit");
            break;
        }
    }
    producer.join().unwrap();
    let child = processor(&broker.bootstrap, &storage, &extra);
    wait_for_everything(&storage, &data, Duration::from_secs(120));
    stop(child);
    assert_exactly_once(storage.path(), &data);
    assert_no_staging_leftovers(storage.path());
}

/// Starts a processor, freezes it (SIGSTOP) as soon as its log says `begun`, and kills it
/// there: whether `ended` had not followed yet, so the kill landed in between.
fn kill_between(
    bootstrap: &str,
    storage: &Store,
    extra: &[&str],
    begun: &str,
    ended: &str,
) -> bool {
    let seen = std::fs::metadata(storage.dir.path().join("test-processor.log"))
        .map_or(0, |m| m.len() as usize);
    let child = processor(bootstrap, storage, extra);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !child.log()[seen..].contains(begun) {
        assert!(Instant::now() < deadline, "never {begun}: {}", child.log());
        std::thread::sleep(Duration::from_millis(1));
    }
    child.freeze();
    let log = child.log()[seen..].to_string();
    child.kill();
    let last = log.rfind(begun).unwrap();
    !log[last..].contains(ended)
}

#[test]
fn two_processors_split_the_partitions_and_stay_exactly_once() {
    two_processors_split_the_partitions(&[]);
}

#[test]
fn two_processors_split_the_partitions_of_delta_tables_and_stay_exactly_once() {
    two_processors_split_the_partitions(DELTA);
}

fn two_processors_split_the_partitions(format: &[&str]) {
    let (broker, data, storage) = given(20_000);
    let extra = [&["--file-max-age-ms", "700"][..], format].concat();
    let first = member(&broker.bootstrap, &storage, "first", &extra);
    produce_first(&data, &broker.bootstrap, &storage);
    // The second one joins: a rebalance takes partitions from the first, which resumes what
    // it keeps from its manifests, as the second does with what it gets.
    let second = member(&broker.bootstrap, &storage, "second", &extra);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !second.log().contains("assigned partitions") {
        assert!(Instant::now() < deadline, "no assignment: {}", second.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    data.produce(&broker.bootstrap, FIRST..usize::MAX, Duration::ZERO);
    wait_for_everything(&storage, &data, Duration::from_secs(120));
    let (first_log, second_log) = (first.log(), second.log());
    stop(first);
    stop(second);
    assert_exactly_once(storage.path(), &data);
    assert_no_staging_leftovers(storage.path());
    let (a, b) = (last_assignment(&first_log), last_assignment(&second_log));
    assert!(
        a != b && !a.contains("[0, 1, 2]") && !b.contains("[0, 1, 2]"),
        "the partitions are split: {a} / {b}"
    );
    // inspect shows how far the group's rows are merged and who holds each partition.
    let out = run(&["inspect", "--storage", storage.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    let group = report
        .split_once("consumer group pageview-processor reading pageview-events\n")
        .unwrap_or_else(|| panic!("no group in {report}"))
        .1;
    assert!(group.contains("  rows merged to 2023-11-1"), "{report}");
    for partition in 0..3 {
        let line = group
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{partition}  ")))
            .unwrap_or_else(|| panic!("no partition {partition} in {report}"));
        assert!(line.contains("first") || line.contains("second"), "{line}");
    }
}

/// One of two processors freezes; the other reads its own partitions to the end, then is
/// given the frozen one's when the group gives up on it. Their backlog is on time, as it was
/// for their owner: resuming them under the watermark of partitions read to the end would
/// make every waiting record late (it did, and the S3 two-processor test saw it now and then).
/// Then the frozen one is thawed, a zombie that still believes it owns its partitions, with
/// records in hand and a checkpoint due: either its checkpoint is refused (fenced) and it
/// stops saying why, or it hears of the rebalance first and rejoins; nothing is written twice.
#[test]
fn a_frozen_members_partitions_are_taken_over_with_their_backlog_on_time() {
    frozen_member(&[]);
}

#[test]
fn a_frozen_members_partitions_of_delta_tables_are_taken_over_with_their_backlog_on_time() {
    frozen_member(DELTA);
}

fn frozen_member(format: &[&str]) {
    let (broker, data, storage) = given(20_000);
    let extra = [
        &["--file-max-age-ms", "700", "--session-timeout-ms", "6000"][..],
        format,
    ]
    .concat();
    let steady = member(&broker.bootstrap, &storage, "steady", &extra);
    produce_first(&data, &broker.bootstrap, &storage);
    let frozen = member(&broker.bootstrap, &storage, "frozen", &extra);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !frozen.log().contains("assigned partitions") {
        assert!(Instant::now() < deadline, "no assignment: {}", frozen.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Frozen while it reads: with records in hand, raw files open and a checkpoint coming.
    std::thread::scope(|s| {
        s.spawn(|| {
            data.produce(
                &broker.bootstrap,
                FIRST..usize::MAX,
                Duration::from_millis(100),
            )
        });
        std::thread::sleep(Duration::from_millis(1200));
        frozen.freeze();
    });
    wait_for_everything(&storage, &data, Duration::from_secs(120));
    let steady_log = steady.log();
    let mut zombie = frozen;
    let fenced = thawed(&mut zombie);
    // Whatever the zombie could still have written is in by now.
    std::thread::sleep(Duration::from_secs(3));
    stop(steady);
    if !fenced {
        stop(zombie);
    }
    assert_exactly_once(storage.path(), &data);
    assert!(
        last_assignment(&steady_log).contains("[0, 1, 2]"),
        "the steady one took every partition: {steady_log}"
    );
}

/// Thaws `zombie`, frozen past its session: either its next checkpoint is refused and it
/// stops saying why (true), or it hears of the rebalance first and is given partitions again.
fn thawed(zombie: &mut Processor) -> bool {
    let assigned_before = zombie.log().matches("assigned partitions").count();
    zombie.thaw();
    let deadline = Instant::now() + Duration::from_secs(60);
    let fenced = loop {
        if let Some(status) = zombie.child.as_mut().unwrap().try_wait().unwrap() {
            let log = zombie.log();
            assert!(
                !status.success() && log.contains("no longer owns it and stops"),
                "{status}: {log}"
            );
            break true;
        }
        if zombie.log().matches("assigned partitions").count() > assigned_before {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "thawed, it neither stopped nor rejoined: {}",
            zombie.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let what = if fenced {
        "fenced"
    } else {
        "given partitions again"
    };
    eprintln!("the thawed processor was {what}");
    fenced
}

/// The line of a processor's log that says which partitions it was given last.
fn last_assignment(log: &str) -> &str {
    log.lines()
        .rfind(|l| l.contains("assigned partitions"))
        .unwrap_or_default()
}

/// A stream with the broker away in the middle, for longer than the processor's session:
/// `outage` takes the broker away and brings it back.
fn rides_out(format: &[&str], outage: impl FnOnce(&mut Broker)) {
    let (mut broker, data, storage) = given(30_000);
    let extra = [
        &["--file-max-age-ms", "700", "--session-timeout-ms", "6000"][..],
        format,
    ]
    .concat();
    let child = processor(&broker.bootstrap, &storage, &extra);
    produce_first(&data, &broker.bootstrap, &storage);
    data.produce(&broker.bootstrap, FIRST..15_000, Duration::from_millis(50));
    outage(&mut broker);
    data.produce(&broker.bootstrap, 15_000..usize::MAX, Duration::ZERO);
    wait_for_everything(&storage, &data, Duration::from_secs(120));
    // Stopped while the broker is gone for good: it still exits, with everything written.
    broker.kill();
    stop(child);
    assert_exactly_once(storage.path(), &data);
    assert_no_staging_leftovers(storage.path());
}

fn broker_restart(broker: &mut Broker) {
    broker.kill();
    std::thread::sleep(Duration::from_secs(8));
    broker.restart();
}

#[test]
fn a_broker_restart_pauses_the_processor_and_loses_nothing() {
    rides_out(&[], broker_restart);
}

#[test]
fn a_broker_restart_pauses_a_processor_into_delta_tables_and_loses_nothing() {
    rides_out(DELTA, broker_restart);
}

/// Thawed, a lone broker is fenced by its controller for a moment and answers metadata with
/// no brokers; librdkafka then forgets every broker (src/kafka/rebootstrap.rs). Most runs
/// go through that.
#[test]
fn a_frozen_broker_pauses_the_processor_and_loses_nothing() {
    rides_out(&[], broker_freeze);
}

#[test]
fn a_frozen_broker_pauses_a_processor_into_delta_tables_and_loses_nothing() {
    rides_out(DELTA, broker_freeze);
}

fn broker_freeze(broker: &mut Broker) {
    broker.freeze();
    std::thread::sleep(Duration::from_secs(10));
    broker.thaw();
}

#[test]
fn a_processor_fenced_by_its_own_instance_id_stops_with_a_reason() {
    let (broker, data, storage) = given(1_000);
    let first = processor(&broker.bootstrap, &storage, &[]);
    produce_first(&data, &broker.bootstrap, &storage);
    // A second processor with the same --group-instance-id (a misconfigured deployment)
    // fences the first: it can never consume again, and must not wait forever.
    let second = processor(&broker.bootstrap, &storage, &[]);
    let mut first = first;
    let status = first.exit_within(Duration::from_secs(60), "the fenced processor still runs");
    assert!(!status.success());
    let log = first.log();
    assert!(
        log.contains("pageview: error: the Kafka consumer stopped for good"),
        "{log}"
    );
    stop(second);
}

#[test]
fn an_unreachable_broker_is_waited_for_saying_so_and_nothing_is_written() {
    let storage = tempfile::tempdir().unwrap();
    let mut process = pageview();
    process.args([
        "process",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--storage",
        storage.path().to_str().unwrap(),
    ]);
    assert_waits_for_unreachable_kafka(process, "127.0.0.1:1");
    assert!(parquet_files(storage.path()).is_empty());
}

#[test]
fn a_processor_started_during_a_broker_outage_waits_and_then_consumes() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let generated = run(&[
        "generate",
        "--bootstrap-servers",
        &broker.bootstrap,
        "--events",
        "3000",
        "--simulated-time",
    ]);
    assert!(generated.status.success(), "{}", stderr(&generated));
    broker.freeze();
    let mut process = pageview();
    process.args([
        "process",
        "--bootstrap-servers",
        &broker.bootstrap,
        "--stop-at-end",
        "--storage",
        dir.path().join("out").to_str().unwrap(),
    ]);
    let log = dir.path().join("stderr");
    let mut child = spawn_logged(process, &log);
    wait_for_log(
        &log,
        &format!("still waiting for Kafka at {}", broker.bootstrap),
        Duration::from_secs(60),
    );
    broker.thaw();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(rows(&dir.path().join("out"), RAW), 3000);
}

#[test]
fn a_member_without_partitions_says_what_it_waits_for() {
    let broker = Broker::start();
    let storage = Store::local();
    // A topic no one created: the group has nothing to assign.
    let waiting = processor(
        &broker.bootstrap,
        &storage,
        &["--topic", "nobody-made-this"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !waiting
        .log()
        .contains("waiting for partitions of nobody-made-this")
    {
        assert!(Instant::now() < deadline, "{}", waiting.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = waiting.log();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains(&format!(
            "connecting to Kafka at {} (PLAINTEXT)",
            broker.bootstrap
        )),
        "said at once: {log}"
    );
    assert!(
        log.contains(&format!(
            "from group pageview-processor at {}",
            broker.bootstrap
        )),
        "{log}"
    );
    stop(waiting);
}

#[test]
fn run_through_kafka_stops_once_everything_produced_is_written() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run_kafka = |events: &str, seed: &str| {
        let output = run(&[
            "run",
            "--kafka",
            &broker.bootstrap,
            "--events",
            events,
            "--simulated-time",
            "--rate",
            "200",
            "--seed",
            seed,
            "--checkpoint-interval-ms",
            "500",
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        (stdout(&output), stderr(&output))
    };
    let (out, err) = run_kafka("20k", "3");
    assert!(
        err.contains("created topic pageview-events with 3 partitions"),
        "{err}"
    );
    assert!(
        out.contains("produced 20000 events to pageview-events"),
        "{out}"
    );
    let written = || rows(&data, RAW) + rows(&data, DLQ) - dead_letters_of(&data, "late_event");
    assert_eq!(written(), 20_000, "every event once: {out}");
    // 20k events at 200/s of simulated time span 100 s: a window closed.
    assert!(rows(&data, AGGREGATED) > 0);
    // A second run continues where the group stopped: only the new events are read.
    let (out, err) = run_kafka("5k", "4");
    assert!(err.contains("producing to topic pageview-events"), "{err}");
    assert!(out.contains("5000 records"), "{out}");
    assert_eq!(written(), 25_000);
    assert_no_staging_leftovers(&data);
}

#[test]
fn stop_at_end_reads_up_to_the_end_then_stops() {
    let (broker, data, storage) = given(10_000);
    stop_after_first(&data, &broker.bootstrap, &storage);
    data.produce(&broker.bootstrap, FIRST..usize::MAX, Duration::ZERO);
    // A backfill: resumes from the checkpoint, reads what the topic holds, and exits.
    let mut backfill = processor(&broker.bootstrap, &storage, &["--stop-at-end"]);
    let status = backfill.exit_within(Duration::from_secs(120), "--stop-at-end still runs");
    assert!(status.success(), "{}", backfill.log());
    assert_exactly_once(storage.path(), &data);
    assert_no_staging_leftovers(storage.path());
}

/// Processes the first records of every partition with a processor that then stops.
fn stop_after_first(data: &Data, bootstrap: &str, storage: &Store) {
    let child = processor(bootstrap, storage, &["--file-max-age-ms", "700"]);
    produce_first(data, bootstrap, storage);
    stop(child);
}

/// Kafka → S3 with raw files of several 5 MiB parts, the processor killed while parts are
/// uploading: no object is partial, none is duplicated, nothing is lost.
#[test]
fn to_s3_kill_9_during_multipart_uploads_loses_and_repeats_nothing() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap);
    // About 1 KB a row, produced over the first 15 s of kills at 1.7k rows/s a partition: a
    // raw file passes its first 5 MiB part after 3 s and completes at 8 s, so most of the
    // time a multipart upload is under way.
    let data = std::sync::Arc::new(Data::with_pages(24_000, 1_000));
    let storage = Store::s3();
    let extra = ["--file-max-age-ms", "8000", "--s3-part-size-mib", "5"];
    let mut child = Some(processor(&broker.bootstrap, &storage, &extra));
    produce_first(&data, &broker.bootstrap, &storage);
    let producer = {
        let (data, bootstrap) = (data.clone(), broker.bootstrap.clone());
        std::thread::spawn(move || {
            data.produce(&bootstrap, FIRST..usize::MAX, Duration::from_millis(600))
        })
    };
    let s3 = storage.s3.as_ref().unwrap();
    let mut open_at_kill = 0;
    // Each life long enough, on a loaded machine too, to have a file past its first part
    // (a fresh clone's full run, its lives 1.9 to 4.1 s, once killed none during an upload).
    for pause in [4000, 4800, 3400, 5600, 4300] {
        let child = child
            .take()
            .unwrap_or_else(|| processor(&broker.bootstrap, &storage, &extra));
        std::thread::sleep(Duration::from_millis(pause));
        child.kill();
        open_at_kill += s3.open_uploads(RAW);
    }
    producer.join().unwrap();
    let child = processor(&broker.bootstrap, &storage, &extra);
    wait_for_everything(&storage, &data, Duration::from_secs(180));
    stop(child);
    eprintln!("kill -9 left {open_at_kill} multipart uploads unfinished");
    assert_exactly_once(storage.path(), &data);
    // A kill between staging a file and writing the manifest that names it leaves the
    // staged object (a complete file, outside every dataset) for an hour, until a recovery
    // may take its writer for dead (docs/EXACTLY_ONCE.md, "On S3").
    let staging = storage.path().join(".staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    for staged in &left {
        let file = std::fs::File::open(staged).unwrap();
        parquet::file::reader::SerializedFileReader::new(file)
            .unwrap_or_else(|e| panic!("{} is not a complete file: {e}", staged.display()));
    }
    eprintln!(
        "{} complete staged objects left by killed processors",
        left.len()
    );
    let biggest = parquet_files(&storage.path().join(RAW))
        .iter()
        .map(|f| {
            std::fs::metadata(storage.dir.path().join(RAW).join(f))
                .unwrap()
                .len()
        })
        .max();
    assert!(
        biggest > Some(5 << 20),
        "raw files of several parts: {biggest:?}"
    );
    assert!(open_at_kill > 0, "no kill landed during a multipart upload");
}

/// Delta tables on S3, written by two processors of one group at once (their raw commits
/// race for the same log versions: S3's conditional put lets one have each), the second
/// killed again and again, then frozen past its session and thawed.
#[test]
fn to_s3_delta_tables_two_processors_killed_frozen_and_thawed_lose_and_repeat_nothing() {
    group_chaos(DELTA, 2, Store::s3());
}

/// Parquet folders on S3 from three processors of one group: one killed again and again,
/// another frozen past its session and thawed while the group carries on.
#[test]
fn to_s3_three_processors_killed_frozen_and_thawed_keep_one_exact_row_per_window() {
    group_chaos(&[], 3, Store::s3());
}

#[test]
fn delta_tables_from_three_processors_killed_frozen_and_thawed_keep_one_exact_row_per_window() {
    group_chaos(DELTA, 3, Store::local());
}

#[test]
fn two_processors_killed_frozen_and_thawed_keep_one_exact_row_per_window() {
    group_chaos(&[], 2, Store::local());
}

/// A group of `members` processors writing to `storage` while the events stream in: `second` is killed
/// three times at moments a merge may be under way, one member (`third`, or `second` in its
/// last life) is frozen past its session, then thawed as a zombie, and the broker is killed
/// and restarted. Every record once, each window's row once with its exact count, as DuckDB
/// and polars read the datasets.
fn group_chaos(format: &[&str], members: usize, storage: Store) {
    let mut broker = Broker::start();
    create_topic(&broker.bootstrap);
    let data = std::sync::Arc::new(Data::new(20_000));
    let extra = [
        &["--file-max-age-ms", "1000", "--session-timeout-ms", "6000"][..],
        format,
    ]
    .concat();
    let steady = member(&broker.bootstrap, &storage, "steady", &extra);
    produce_first(&data, &broker.bootstrap, &storage);
    let producer = {
        let (data, bootstrap) = (data.clone(), broker.bootstrap.clone());
        std::thread::spawn(move || {
            data.produce(&bootstrap, FIRST..usize::MAX, Duration::from_millis(300))
        })
    };
    let mut third = (members == 3).then(|| member(&broker.bootstrap, &storage, "third", &extra));
    let mut frozen = None;
    for (round, pause) in [2500, 3500, 3000].into_iter().enumerate() {
        let second = member(&broker.bootstrap, &storage, "second", &extra);
        std::thread::sleep(Duration::from_millis(pause));
        if round == 1
            && let Some(third) = third.take()
        {
            third.freeze();
            frozen = Some((third, Instant::now()));
        }
        if round == 2 && frozen.is_none() {
            second.freeze();
            frozen = Some((second, Instant::now()));
        } else {
            second.kill();
        }
        assert_nothing_twice(storage.path());
    }
    let (mut zombie, since) = frozen.expect("one member froze");
    // Past the session, the group has given the frozen one's partitions away.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(since.elapsed()));
    let fenced = thawed(&mut zombie);
    producer.join().unwrap();
    broker_restart(&mut broker);
    wait_for_everything(&storage, &data, Duration::from_secs(180));
    stop_unless_fenced(steady);
    if !fenced {
        stop_unless_fenced(zombie);
    }
    assert_exactly_once(storage.path(), &data);
    readers_see_one_row_per_window(&storage, format);
    if let (false, Some(s3)) = (format.is_empty(), &storage.s3) {
        // polars reads the table straight from S3, as docs/DEPLOY.md shows.
        let endpoint = &s3.endpoint;
        let script = format!(
            "import polars as pl\n\
             s3 = {{'AWS_ENDPOINT_URL': '{endpoint}', 'AWS_REGION': 'us-east-1', \
             'AWS_ACCESS_KEY_ID': 'test', 'AWS_SECRET_ACCESS_KEY': 'test', 'AWS_ALLOW_HTTP': 'true'}}\n\
             print(pl.read_delta('s3://{RAW}', storage_options=s3).height)\n"
        );
        assert_eq!(python(&script, &[]).trim(), data.valid().to_string());
    }
}

/// What `script` prints, run by the readers' Python with `args`.
fn python(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(readers_python())
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// Stops `processor`, unless it has stopped already because it was fenced: a zombie that
/// commits a partition before its new owner's first checkpoint (thawed in the moment after
/// the rebalance) wins it, and the new owner stops instead.
fn stop_unless_fenced(mut processor: Processor) {
    if let Some(status) = processor.child.as_mut().unwrap().try_wait().unwrap() {
        let log = processor.log();
        assert!(
            !status.success() && log.contains("no longer owns it and stops"),
            "{status}: {log}"
        );
        eprintln!("a processor was fenced by the thawed one");
        processor.child = None;
        return;
    }
    stop(processor);
}

/// DuckDB and polars read the aggregated dataset as a user would (a table through its log):
/// one row per (window, postcode), and the same counts.
fn readers_see_one_row_per_window(storage: &Store, format: &[&str]) {
    let aggregated = storage.path().join(AGGREGATED);
    let script = r#"
import glob, sys
import duckdb, polars as pl
from deltalake import DeltaTable
agg, delta = sys.argv[1], sys.argv[2] == "delta"
if delta:
    files = DeltaTable(agg).file_uris()
    df = pl.read_delta(agg)
else:
    files = glob.glob(f"{agg}/**/*.parquet", recursive=True)
    df = pl.read_parquet(files)
duck = duckdb.sql(
    f"SELECT count(*), count(DISTINCT (window_start, postcode)), sum(pageview_count) "
    f"FROM read_parquet({files!r})"
).fetchall()[0]
keys = df.select(["window_start", "postcode"]).unique().height
print("duckdb", *duck)
print("polars", df.height, keys, df["pageview_count"].sum())
"#;
    let kind = if format.is_empty() {
        "parquet"
    } else {
        "delta"
    };
    let said = python(script, &[aggregated.as_os_str(), kind.as_ref()]);
    let figures: Vec<Vec<u64>> = said
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(figures.len(), 2, "{said}");
    for reader in &figures {
        assert!(
            reader[0] > 0 && reader[0] == reader[1],
            "one row per key: {said}"
        );
    }
    assert_eq!(figures[0], figures[1], "DuckDB and polars agree: {said}");
}

/// S3 stops answering for longer than the request timeout in the middle of a stream: the
/// processor says so, waits, and carries on when S3 is back, losing nothing.
#[test]
fn an_s3_stall_pauses_the_processor_and_loses_nothing() {
    s3_stall(&[]);
}

#[test]
fn an_s3_stall_pauses_a_processor_into_delta_tables_and_loses_nothing() {
    s3_stall(DELTA);
}

fn s3_stall(format: &[&str]) {
    let broker = Broker::start();
    create_topic(&broker.bootstrap);
    let data = Data::new(30_000);
    let storage = Store::s3();
    let extra = [
        &[
            "--file-max-age-ms",
            "700",
            "--s3-timeout-ms",
            "1500",
            "--metrics-port",
            "0",
            "--metrics-host",
            "127.0.0.1",
        ][..],
        format,
    ]
    .concat();
    let child = processor(&broker.bootstrap, &storage, &extra);
    produce_first(&data, &broker.bootstrap, &storage);
    data.produce(&broker.bootstrap, FIRST..15_000, Duration::from_millis(50));
    let s3 = storage.s3.as_ref().unwrap();
    s3.freeze();
    data.produce(&broker.bootstrap, 15_000..usize::MAX, Duration::ZERO);
    std::thread::sleep(Duration::from_secs(15));
    s3.thaw();
    wait_for_everything(&storage, &data, Duration::from_secs(120));
    let log = child.log();
    // The failed attempts are counted by request.
    let address = log
        .lines()
        .find_map(status_address)
        .unwrap_or_else(|| panic!("no metrics address: {log}"));
    let (_, metrics) = http_get(address, "/metrics");
    stop(child);
    assert!(log.contains("pageview: S3 is failing"), "{log}");
    assert!(log.contains("pageview: S3 works again after"), "{log}");
    let failed = sum_of(&parse_metrics(&metrics), "pageview_storage_errors_total");
    assert!(failed > 0.0, "{metrics}");
    assert_exactly_once(storage.path(), &data);
    assert_no_staging_leftovers(storage.path());
}

/// Produces each `(partition, value, record timestamp)` to `topic`, `pace` apart, and waits
/// for delivery.
fn produce_stamped(bootstrap: &str, topic: &str, records: &[(i32, Vec<u8>, i64)], pace: Duration) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (partition, value, timestamp) in records {
        let record = BaseRecord::<(), _>::to(topic)
            .payload(value)
            .partition(*partition)
            .timestamp(*timestamp);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(pace);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Client clocks set wrong, through Kafka (docs/CONTRACT.md 3). The records carry the times
/// of a producer whose clock is two hours behind this machine's, as if produced two hours
/// ago, so a decision taken against the machine's clock would differ from one against the
/// record's: an event 90 minutes ahead of its record is future, though the clock has passed
/// it. An outlier within the bound (30 minutes ahead) is in the checkpoint when the processor
/// is killed and closes nothing after the restart; quiet gaps longer than the idle timeout let
/// every partition settle on its record times, never on the outlier.
#[test]
fn wrong_client_clocks_make_no_honest_event_late_through_kafka_and_a_kill_9() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap);
    let storage = Store::local();
    let t = now_ms() - 120 * MINUTE;
    // Honest event i of partition p, a second apart, its record 200 ms after it.
    let honest = |p: i32, i: i64| {
        let at = t + i * 1_000 + i64::from(p) * 100;
        let user_id = i64::from(p) * 1_000_000 + i + 1;
        (
            p,
            event(user_id, POSTCODES[(i % 5) as usize], at, 0),
            at + 200,
        )
    };
    let run = |range: std::ops::Range<i64>| -> Vec<(i32, Vec<u8>, i64)> {
        range
            .flat_map(|i| (0..3).map(move |p| honest(p, i)))
            .collect()
    };
    // Records trickle in while the processor consumes, event time running about 7 times as
    // fast as the clock, and the quiet after each part outlasts the idle timeout. (Faster,
    // a partition whose records a loaded machine delivers a moment late, after every
    // partition went idle, would find windows closed by the others: the idle rule's risk
    // with time compressed, whatever the clock rule. At 13 times, a fresh clone's full run
    // saw 8 such records late.)
    let flags = ["--idle-timeout", "3s", "--file-max-age-ms", "300"];
    let (pace, quiet) = (Duration::from_millis(50), Duration::from_secs(4));
    let first = processor(&broker.bootstrap, &storage, &flags);
    joined(&first);
    produce_stamped(&broker.bootstrap, TOPIC, &run(0..40), pace);
    std::thread::sleep(quiet);
    // Record times as the honest producer gives them; event times as the clients do.
    let record = t + 40_000;
    let outliers = [
        (0, event(900_000, "SW19", t + 30 * MINUTE, 0), record),
        (1, event(900_001, "SW19", record + 90 * MINUTE, 0), record),
        (2, event(900_002, "SW19", t + 24 * 60 * MINUTE, 0), record),
        (0, event(900_003, "SW19", 4_070_908_800_000, 0), record),
    ];
    produce_stamped(&broker.bootstrap, TOPIC, &outliers, pace);
    produce_stamped(&broker.bootstrap, TOPIC, &run(40..80), pace);
    let future = |root: &Path| {
        dead_letter_rows(root)
            .into_iter()
            .filter(|row| row.kind == "future_timestamp")
            .map(|row| row.message)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // Killed once all of it is published: the 30-minute outlier is in the open checkpoint,
    // its window open, and the restart reads nothing new before the next part.
    while future(storage.path()).len() < 3 || rows(storage.path(), RAW) < 3 * 80 + 1 {
        assert!(
            Instant::now() < deadline,
            "not all published: {}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill();
    let second = processor(&broker.bootstrap, &storage, &flags);
    joined(&second);
    std::thread::sleep(quiet);
    produce_stamped(&broker.bootstrap, TOPIC, &run(80..120), pace);
    // The stream moves on ten minutes, three events a partition: every window before closes.
    let jump: Vec<(i32, Vec<u8>, i64)> = (0..3)
        .flat_map(|p| {
            (0..3).map(move |k| {
                let at = t + 10 * MINUTE + k * 1_000;
                (
                    p,
                    event(800_000 + i64::from(p) * 10 + k, "E1", at, 0),
                    at + 200,
                )
            })
        })
        .collect();
    produce_stamped(&broker.bootstrap, TOPIC, &jump, pace);
    let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for i in 0..120 {
        for p in 0..3 {
            let at = t + i * 1_000 + i64::from(p) * 100;
            *want
                .entry((
                    at.div_euclid(MINUTE) * MINUTE,
                    POSTCODES[(i % 5) as usize].into(),
                ))
                .or_default() += 1;
        }
    }
    let last = want.keys().map(|(start, _)| *start).max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !window_counts(storage.path()).contains_key(&last) {
        assert!(
            Instant::now() < deadline,
            "the last window never closed: {}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(second);

    let root = storage.path();
    assert_eq!(
        dead_letters_of(root, "late_event"),
        0,
        "no honest event is late"
    );
    let future = future(root);
    assert_eq!(
        future.len(),
        3,
        "90 minutes, a day and 2099 ahead, each once: {future:?}"
    );
    assert!(
        future
            .iter()
            .all(|m| m.contains("the Kafka record's CreateTime")),
        "{future:?}"
    );
    let (mut raw, _) = outputs(root);
    raw.sort_unstable();
    let mut want_raw: Vec<i64> = (0..3)
        .flat_map(|p: i64| (0..120).map(move |i| p * 1_000_000 + i + 1))
        .chain([900_000])
        .chain((0..3).flat_map(|p| (0..3).map(move |k| 800_000 + p * 10 + k)))
        .collect();
    want_raw.sort_unstable();
    assert_eq!(
        raw, want_raw,
        "every honest event and the 30-minute outlier, once"
    );
    let got: BTreeMap<(i64, String), i64> = window_counts(root)
        .into_iter()
        .flat_map(|(start, rows)| {
            rows.into_iter()
                .map(move |(postcode, n)| ((start, postcode), n))
        })
        .collect();
    assert_eq!(
        got, want,
        "every honest window, exact; the outliers' stay open"
    );
}

/// A topic that keeps the broker's clock: a producer a day fast vouches for nothing.
#[test]
fn a_log_append_time_topic_judges_events_by_the_brokers_clock() {
    let broker = Broker::start();
    create_topic_with(
        &broker.bootstrap,
        TOPIC,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    let storage = Store::local();
    let now = now_ms();
    let day = 24 * 60 * MINUTE;
    // One producer honest, one a day fast, its records stamped with its own clock.
    let records: Vec<(i32, Vec<u8>, i64)> = (0..3)
        .flat_map(|i| {
            [
                (0, event(i + 1, "E1", now + i, 0), now + i),
                (1, event(100 + i, "E1", now + day + i, 0), now + day + i),
            ]
        })
        .collect();
    produce_stamped(&broker.bootstrap, TOPIC, &records, Duration::ZERO);
    let mut done = processor(&broker.bootstrap, &storage, &["--stop-at-end"]);
    let status = done.exit_within(Duration::from_secs(60), "--stop-at-end never stopped");
    assert!(status.success(), "{}", done.log());
    let root = storage.path();
    let letters: Vec<(String, String)> = dead_letter_rows(root)
        .into_iter()
        .map(|row| (row.kind, row.message))
        .collect();
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(
        letters
            .iter()
            .all(|(kind, message)| kind == "future_timestamp"
                && message.contains("the Kafka record's LogAppendTime")),
        "{letters:?}"
    );
    assert_eq!(rows(root, RAW), 3);
}

/// A group that read one topic, started on another: it stops with one line, rather than
/// resume the new topic at the old one's offsets and read nothing.
#[test]
fn a_group_reused_for_another_topic_stops_naming_both() {
    let broker = Broker::start();
    let storage = Store::local();
    let run_on = |topic: &str| {
        let produced = run(&[
            "generate",
            "--bootstrap-servers",
            &broker.bootstrap,
            "--topic",
            topic,
            "--events",
            "30",
            "--simulated-time",
            "--partitions",
            "3",
        ]);
        assert!(produced.status.success(), "{}", stderr(&produced));
        storage
            .command()
            .args(["--bootstrap-servers", &broker.bootstrap, "--topic", topic])
            .args(["--group", "shared", "--stop-at-end"])
            .output()
            .unwrap()
    };
    let first = run_on("views-a");
    assert!(first.status.success(), "{}", stderr(&first));
    let second = run_on("views-b");
    assert!(!second.status.success());
    let log = stderr(&second);
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pageview: error: consumer group shared has checkpoints of topic views-a")
            && last.contains("not views-b"),
        "{log}"
    );
    assert_eq!(log.matches("error").count(), 1, "one line: {log}");
}

/// Grows `topic` to `partitions` partitions.
fn grow(bootstrap: &str, topic: &str, partitions: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grown = NewPartitions::new(topic, partitions);
    let results = runtime
        .block_on(admin.create_partitions([&grown], &AdminOptions::new()))
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

/// A topic grown from 3 to 6 partitions while two processors read it (docs/EXACTLY_ONCE.md,
/// "One row per window"): a new partition holds the group's merging back until its first
/// checkpoint, its records in windows the group merged before it was read are late, once,
/// and every other record is counted in the one row of its window.
#[test]
fn a_topic_grown_from_3_to_6_partitions_keeps_every_row_exact() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap);
    let storage = Store::local();
    // Minutes start at t: the first part's first window closes within it.
    let t = (now_ms() - 120 * MINUTE).div_euclid(MINUTE) * MINUTE;
    let flags = [
        "--idle-timeout",
        "3s",
        "--kafka-option",
        "topic.metadata.refresh.interval.ms=1000",
    ];
    let (a, b) = (
        member(&broker.bootstrap, &storage, "a", &flags),
        member(&broker.bootstrap, &storage, "b", &flags),
    );
    joined(&a);
    joined(&b);
    // Event i of partition p, a second apart, its record 200 ms after it.
    let at = |p: i32, i: i64| t + i * 1_000 + i64::from(p) * 100;
    let user = |p: i32, i: i64| i64::from(p) * 1_000_000 + i + 1;
    let window = |p: i32, i: i64| at(p, i).div_euclid(MINUTE) * MINUTE;
    let part = |partitions: std::ops::Range<i32>, range: std::ops::Range<i64>| {
        range
            .flat_map(|i| partitions.clone().map(move |p| (p, i)))
            .collect::<Vec<_>>()
    };
    let records = |events: &[(i32, i64)]| {
        events
            .iter()
            .map(|&(p, i)| {
                let postcode = POSTCODES[(i % 5) as usize];
                (p, event(user(p, i), postcode, at(p, i), 0), at(p, i) + 200)
            })
            .collect::<Vec<_>>()
    };
    let pace = Duration::from_millis(10);
    let first = part(0..3, 0..100);
    produce_stamped(&broker.bootstrap, TOPIC, &records(&first), pace);
    let merged = |i| window_counts(storage.path()).contains_key(&window(0, i));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !merged(0) {
        assert!(Instant::now() < deadline, "never merged: {}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    grow(&broker.bootstrap, TOPIC, 6);
    // The new partitions' first records are of windows the group has merged: late, once.
    let old = part(3..6, 0..20);
    let second = part(0..6, 100..190);
    produce_stamped(&broker.bootstrap, TOPIC, &records(&old), pace);
    produce_stamped(&broker.bootstrap, TOPIC, &records(&second), pace);
    // The stream moves on ten minutes in every partition: every window before closes.
    let jump = part(0..6, 600..603);
    produce_stamped(&broker.bootstrap, TOPIC, &records(&jump), pace);
    let all: Vec<(i32, i64)> = [&first[..], &old, &second, &jump].concat();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !merged(189) || rows(storage.path(), RAW) < all.len() {
        assert!(
            Instant::now() < deadline,
            "the last window never merged: {}{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(a);
    stop(b);

    let root = storage.path();
    let (mut raw, dead) = outputs(root);
    raw.sort_unstable();
    let mut want_raw: Vec<i64> = all.iter().map(|&(p, i)| user(p, i)).collect();
    want_raw.sort_unstable();
    assert_eq!(raw, want_raw, "every valid record once in raw");
    // Each partition's records in the order produced: offset = position.
    let offset = |p: i32, i: i64| {
        let of = |part: &[(i32, i64)]| part.iter().filter(|e| e.0 == p).count() as i64;
        match i {
            ..100 => i,
            _ => of(&first) + of(&old) + i - 100,
        }
    };
    let late: HashSet<(i32, i64)> = dead
        .iter()
        .map(|(p, offset, kind)| {
            assert_eq!(kind, "late_event");
            (*p, *offset)
        })
        .collect();
    assert_eq!(late.len(), dead.len(), "each late record once");
    let old_late: HashSet<(i32, i64)> = old.iter().map(|&(p, i)| (p, offset(p, i))).collect();
    assert!(
        old_late.is_subset(&late),
        "records of merged windows are late: {late:?}"
    );
    assert!(
        late.iter().all(|(p, _)| *p >= 3),
        "only records of the new partitions can find their window merged: {late:?}"
    );
    let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for &(p, i) in [&first[..], &old, &second].concat().iter() {
        if !late.contains(&(p, offset(p, i))) {
            let key = (window(p, i), POSTCODES[(i % 5) as usize].to_string());
            *want.entry(key).or_default() += 1;
        }
    }
    let got = rows_by_key(root);
    assert_eq!(got, want, "every window's row exact");
    eprintln!(
        "{} records of the new partitions late, {} of them in windows merged before",
        late.len(),
        old_late.len()
    );
}

/// A partition that stays empty holds the group's rows back no longer than the idle
/// timeout (docs/CONTRACT.md 4): its owner checkpoints it idle, final as far as the group's
/// watermark, and every window the others closed gets its one exact row.
#[test]
fn a_partition_that_stays_empty_holds_the_group_back_no_longer_than_the_idle_timeout() {
    let broker = Broker::start();
    create_topic(&broker.bootstrap);
    let storage = Store::local();
    let t = (now_ms() - 120 * MINUTE).div_euclid(MINUTE) * MINUTE;
    let flags = ["--idle-timeout", "3s"];
    let (a, b) = (
        member(&broker.bootstrap, &storage, "a", &flags),
        member(&broker.bootstrap, &storage, "b", &flags),
    );
    joined(&a);
    joined(&b);
    // Events a second apart in partitions 0 and 1; partition 2 gets none.
    let at = |p: i32, i: i64| t + i * 1_000 + i64::from(p) * 100;
    let events: Vec<(i32, i64)> = (0..130).flat_map(|i| [(0, i), (1, i)]).collect();
    let records: Vec<(i32, Vec<u8>, i64)> = events
        .iter()
        .map(|&(p, i)| {
            let user = i64::from(p) * 1_000_000 + i + 1;
            let postcode = POSTCODES[(i % 5) as usize];
            (p, event(user, postcode, at(p, i), 0), at(p, i) + 200)
        })
        .collect();
    produce_stamped(
        &broker.bootstrap,
        TOPIC,
        &records,
        Duration::from_millis(10),
    );
    // Minutes 0 and 1 close in partitions 0 and 1; partition 2 proves idle.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !window_counts(storage.path()).contains_key(&(t + MINUTE)) {
        assert!(
            Instant::now() < deadline,
            "the empty partition holds the rows back: {}{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(a);
    stop(b);
    let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for &(p, i) in events.iter().filter(|&&(_, i)| i < 120) {
        let key = (
            at(p, i).div_euclid(MINUTE) * MINUTE,
            POSTCODES[(i % 5) as usize].into(),
        );
        *want.entry(key).or_default() += 1;
    }
    let mut got = rows_by_key(storage.path());
    got.retain(|(start, _), _| *start < t + 2 * MINUTE);
    assert_eq!(got, want, "minutes 0 and 1, every row exact");
}
