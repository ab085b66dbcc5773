//! Produce → row readable, through a real broker: events are produced in real time (their
//! event time is the wall clock), a `process` child consumes them, and the aggregated and raw
//! datasets are watched as a reader sees them: the Parquet files in the folders, or, for
//! Delta tables (`TABLE_FORMAT=delta`, which the child inherits), the files of each new
//! version of the table.
//!
//! A window [s, e) can be final only once every partition's clock has reached e + watermark
//! delay: once the partition has delivered `CONFIRMING` events of that time or later (its
//! events come in order here); the producer picks each event's partition, so it knows when
//! the last of those was produced. How much later that is than the first such event of each
//! partition is the clock's cost (docs/CONTRACT.md 3), reported beside the latency. A window's latency is from that moment to its row being
//! readable: Kafka both ways, routing, the checkpoint that publishes it, and the rename (and
//! the table's commit). A raw row's is from its event time, when it was produced, to when it
//! is readable: mostly the file's age when it rolls and the wait for the next checkpoint.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::{parquet_files, sample_rss};
use crate::commit::TableRoot;
use crate::generate::{Generator, GeneratorConfig, Pace, now_ms};
use crate::kafka::{self, Cluster, producer_config};
use crate::window::CONFIRMING;

const PARTITIONS: i32 = 3;
/// The buckets the processor writes windows and raw rows to, whatever the environment says.
const AGGREGATED: &str = "pageview-latency-aggregated";
const RAW: &str = "pageview-latency-raw-events";
/// The processor's default `--watermark-delay-ms`.
const WATERMARK_DELAY_MS: i64 = 5000;
/// How long a group must go without a rebalance to count as settled.
const SETTLE: Duration = Duration::from_secs(2);
/// How often the datasets are looked at: the resolution of the measurement.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// What one rate gave.
pub struct Latencies {
    /// Per window, from when it could first be final to its row being readable.
    pub windows: Vec<Duration>,
    /// Per window, how long the partitions' clocks took to confirm its end: from when every
    /// partition had an event past it to when every partition had enough.
    pub confirmations: Vec<Duration>,
    /// Per raw row, from its event time (when it was produced) to its being readable, ms.
    pub raw_rows: Vec<i64>,
    /// The (first) processor's resident memory every `super::RSS_EVERY`.
    pub rss_samples: Vec<u64>,
}

/// Runs `processors` processors of one group on a new topic fed at `rate` events/s until
/// `windows` windows are readable.
pub fn measure(
    exe: &Path,
    servers: &str,
    rate: f64,
    (windows, window_seconds): (usize, u32),
    processors: usize,
    dir: &Path,
) -> Result<Latencies> {
    let topic = format!("pageview-latency-{}", now_ms());
    kafka::ensure_topic(
        &Cluster::plaintext(servers),
        &topic,
        PARTITIONS,
        &AtomicBool::new(false),
    )?;
    let out = dir.join("out-latency");
    super::clear(&out)?;
    let mut children = Vec::with_capacity(processors);
    for n in 0..processors {
        let log = dir.join(format!("latency-processor-{n}.log"));
        let child = Command::new(exe)
            .args(["process", "--bootstrap-servers", servers, "--topic", &topic])
            .args(["--group", &topic, "--storage", super::path_str(&out)?])
            .args([
                "--aggregated-bucket",
                AGGREGATED,
                "--raw-events-bucket",
                RAW,
            ])
            .args(["--window-size-seconds", &window_seconds.to_string()])
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        children.push((child, log));
    }
    settled(&mut children)?;
    let rss = sample_rss(children[0].0.id() as libc::pid_t);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(vec![Vec::new(); PARTITIONS as usize]));
    let producer = {
        let (servers, topic, stop, sent) = (
            servers.to_string(),
            topic.clone(),
            stop.clone(),
            sent.clone(),
        );
        std::thread::spawn(move || produce(&servers, &topic, rate, &stop, &sent))
    };
    let mut watched = Watched {
        aggregated: Dataset::new(&out, AGGREGATED),
        raw: Dataset::new(&out, RAW),
        windows: BTreeMap::new(),
        raw_rows: Vec::new(),
    };
    let seen = watched.until(windows, &mut children, &producer);
    stop.store(true, Ordering::Relaxed);
    for (child, _) in &mut children {
        // SAFETY: signals the child we spawned, by its PID.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = child.wait();
    }
    let rss_samples = rss.join().unwrap_or_default();
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    seen?;
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
    let size_ms = i64::from(window_seconds) * 1000;
    let confirmations = watched
        .windows
        .keys()
        .filter_map(|&start| {
            let end = start + size_ms + WATERMARK_DELAY_MS;
            let first = closable_at(&sent, end, 1)?;
            let confirmed = closable_at(&sent, end, CONFIRMING)?;
            Some(Duration::from_millis((confirmed - first) as u64))
        })
        .collect();
    let windows = watched
        .windows
        .iter()
        .filter_map(|(&start, &readable)| {
            let closable = closable_at(&sent, start + size_ms + WATERMARK_DELAY_MS, CONFIRMING)?;
            Some(Duration::from_millis((readable - closable).max(0) as u64))
        })
        .collect();
    Ok(Latencies {
        windows,
        confirmations,
        raw_rows: watched.raw_rows,
        rss_samples,
    })
}

/// Produces real-time events round-robin over the partitions, recording each one's event
/// time per partition, until `stop`.
fn produce(
    servers: &str,
    topic: &str,
    rate: f64,
    stop: &AtomicBool,
    sent: &Mutex<Vec<Vec<i64>>>,
) -> Result<()> {
    let producer: BaseProducer = producer_config(&Cluster::plaintext(servers)).create()?;
    let mut generator = Generator::new(GeneratorConfig {
        rate,
        events: None,
        seed: 1,
        malformed_share: 0.0,
        late_share: 0.0,
        jitter_ms: 0,
        simulated_start_ms: None,
        speedup: None,
    });
    let pace = Pace::new(rate, true, None);
    let mut line = Vec::with_capacity(256);
    let mut n: u64 = 0;
    while pace.wait_for(n, stop, || {
        producer.poll(Duration::ZERO);
    }) {
        line.clear();
        let time = now_ms();
        generator.next_line(&mut line);
        let partition = (n % PARTITIONS as u64) as i32;
        let mut record = BaseRecord::<(), _>::to(topic)
            .payload(&line)
            .partition(partition);
        // A send naming its partition fails until the client has the topic's metadata.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err((e, unsent)) = producer.send(record) {
            let waiting = matches!(
                e,
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::UnknownPartition | RDKafkaErrorCode::QueueFull
                )
            );
            if !waiting || Instant::now() > deadline {
                bail!("cannot produce: {e}");
            }
            record = unsent;
            producer.poll(Duration::from_millis(50));
        }
        sent.lock().unwrap_or_else(|e| e.into_inner())[partition as usize].push(time);
        producer.poll(Duration::ZERO);
        n += 1;
    }
    let _ = producer.flush(Duration::from_secs(10));
    Ok(())
}

/// When the last partition got its `nth` event at or after `time` (ms), if all did.
fn closable_at(sent: &[Vec<i64>], time: i64, nth: usize) -> Option<i64> {
    sent.iter()
        .map(|times| {
            times
                .get(times.partition_point(|&t| t < time) + nth - 1)
                .copied()
        })
        .try_fold(i64::MIN, |latest, first| Some(latest.max(first?)))
}

/// One dataset as a reader sees it, and which of its files were read already.
struct Dataset {
    root: PathBuf,
    bucket: &'static str,
    read: HashSet<PathBuf>,
    /// How many entries the table's log had at the last look, so that a reader loads the
    /// table only when a version was added.
    log_entries: usize,
}

impl Dataset {
    fn new(root: &Path, bucket: &'static str) -> Self {
        Dataset {
            root: root.to_path_buf(),
            bucket,
            read: HashSet::new(),
            log_entries: 0,
        }
    }

    /// The files readers see now that were not seen before.
    fn new_files(&mut self) -> Result<Vec<PathBuf>> {
        let folder = self.root.join(self.bucket);
        let log = folder.join("_delta_log");
        let files = if log.is_dir() {
            let entries = std::fs::read_dir(&log)?.count();
            if entries == self.log_entries {
                return Ok(Vec::new());
            }
            self.log_entries = entries;
            crate::commit::current_files(&TableRoot::Folder(&self.root), self.bucket)?
                .unwrap_or_default()
                .into_iter()
                .map(|f| folder.join(f.path))
                .collect()
        } else {
            parquet_files(&folder)
        };
        Ok(files
            .into_iter()
            .filter(|f| self.read.insert(f.clone()))
            .collect())
    }
}

/// What the watcher saw.
struct Watched {
    aggregated: Dataset,
    raw: Dataset,
    /// Each window start with the wall time (ms) its first row was seen.
    windows: BTreeMap<i64, i64>,
    raw_rows: Vec<i64>,
}

impl Watched {
    /// Looks at the datasets until `windows` windows are readable.
    fn until(
        &mut self,
        windows: usize,
        children: &mut [(Child, PathBuf)],
        producer: &std::thread::JoinHandle<Result<()>>,
    ) -> Result<()> {
        let started = Instant::now();
        while self.windows.len() < windows {
            stopped(children)?;
            if producer.is_finished() {
                bail!("the producer stopped early");
            }
            let now = now_ms();
            for file in self.aggregated.new_files()? {
                for start in column_of(&file, "window_start")? {
                    self.windows.entry(start).or_insert(now);
                }
            }
            for file in self.raw.new_files()? {
                let times = column_of(&file, "timestamp")?;
                self.raw_rows.extend(times.iter().map(|t| now - t));
            }
            if started.elapsed() > Duration::from_secs(3600) {
                bail!("no {windows} windows within an hour");
            }
            std::thread::sleep(WATCH_EVERY);
        }
        Ok(())
    }
}

/// An error naming the processor that stopped, with its log, if one did.
fn stopped(children: &mut [(Child, PathBuf)]) -> Result<()> {
    for (child, log) in children {
        if let Some(status) = child.try_wait()? {
            bail!(
                "a processor stopped early ({status}); its log: {}",
                log.display()
            );
        }
    }
    Ok(())
}

/// Waits until every processor has been given partitions and the group has been quiet for
/// a moment, so that no window is measured across the rebalances of processors joining.
fn settled(children: &mut [(Child, PathBuf)]) -> Result<()> {
    // How many assignments each processor has logged.
    let assignments = |children: &[(Child, PathBuf)]| -> Vec<usize> {
        children
            .iter()
            .map(|(_, log)| {
                std::fs::read_to_string(log)
                    .map(|text| text.matches("assigned partitions").count())
                    .unwrap_or(0)
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        stopped(children)?;
        let before = assignments(children);
        if before.iter().all(|&n| n > 0) {
            std::thread::sleep(SETTLE);
            if assignments(children) == before {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the processors were not all given partitions within two minutes");
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// The values of a time column (window starts, or raw event times) of a Parquet file, ms.
fn column_of(file: &Path, name: &str) -> Result<Vec<i64>> {
    let open = || -> Result<Vec<i64>> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(file)?)?.build()?;
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch?;
            let column = batch
                .column_by_name(name)
                .with_context(|| format!("no {name} column"))?;
            match column.data_type() {
                DataType::Timestamp(..) => {
                    values.extend(column.as_primitive::<TimestampMillisecondType>().values())
                }
                _ => values.extend(column.as_primitive::<Int64Type>().values()),
            }
        }
        Ok(values)
    };
    open().with_context(|| format!("cannot read {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_closable_once_every_partition_passed_its_end() {
        let sent = vec![vec![100, 200, 300], vec![150, 250], vec![120, 400]];
        assert_eq!(closable_at(&sent, 200, 1), Some(400));
        assert_eq!(closable_at(&sent, 100, 1), Some(150));
        assert_eq!(
            closable_at(&sent, 260, 1),
            None,
            "partition 1 never got there"
        );
        assert_eq!(
            closable_at(&sent, 100, 2),
            Some(400),
            "partition 2's second"
        );
        assert_eq!(
            closable_at(&sent, 100, 3),
            None,
            "partitions 1 and 2 have two"
        );
    }
}
