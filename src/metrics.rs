//! Prometheus metrics (`/metrics`, served by `serve`): what the processor and the generator
//! have done. The processing thread counts in plain integers (`Stats`) and copies them here
//! once a tick, so no record pays for an atomic operation.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::commit::{Hold, Pass};
use crate::record::{ErrorKind, Partition};
use crate::sink::Dataset;
use crate::stats::Stats;
use crate::storage::RequestObserver;
use crate::window::Watermarks;

/// Every metric name starts with this.
pub const PREFIX: &str = "pageview";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    error_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatasetLabel {
    dataset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: String,
}

/// What holds the group's merging back: a partition (and the member whose checkpoint has
/// it), or a reason without one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HoldLabel {
    reason: String,
    partition: String,
    member: String,
}

type Seconds = Gauge<f64, AtomicU64>;

/// The processor's metrics.
pub struct PipelineMetrics {
    records: Counter,
    valid: Counter,
    malformed: Family<KindLabel, Counter>,
    late: Counter,
    future: Counter,
    windows: Counter,
    window_rows: Counter,
    files: Family<DatasetLabel, Counter>,
    rows: Family<DatasetLabel, Counter>,
    bytes: Family<DatasetLabel, Counter>,
    watermark: Seconds,
    watermark_delay: Seconds,
    partition_watermark: Family<PartitionLabel, Seconds>,
    lag: Family<PartitionLabel, Gauge>,
    storage_seconds: Family<ActionLabel, Histogram>,
    storage_errors: Family<ActionLabel, Counter>,
    checkpoint_seconds: Histogram,
    checkpoint_age: Seconds,
    last_checkpoint: Mutex<Option<Instant>>,
    group_merged: Seconds,
    group_final: Seconds,
    group_held_by: Family<HoldLabel, Gauge>,
    group_rows: Counter,
    /// What the counters last showed, so each observation adds only what is new.
    seen: Mutex<Stats>,
}

impl PipelineMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(PipelineMetrics {
            records: Counter::default(),
            valid: Counter::default(),
            malformed: Family::default(),
            late: Counter::default(),
            future: Counter::default(),
            windows: Counter::default(),
            window_rows: Counter::default(),
            files: Family::default(),
            rows: Family::default(),
            bytes: Family::default(),
            watermark: Seconds::default(),
            watermark_delay: Seconds::default(),
            partition_watermark: Family::default(),
            lag: Family::default(),
            // 1 ms to about 65 s.
            storage_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            storage_errors: Family::default(),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            checkpoint_age: Seconds::default(),
            last_checkpoint: Mutex::default(),
            group_merged: Seconds::default(),
            group_final: Seconds::default(),
            group_held_by: Family::default(),
            group_rows: Counter::default(),
            seen: Mutex::default(),
        });
        let m = &metrics;
        registry.register(
            "records_read",
            "Records read from the input (a file or Kafka), each once",
            m.records.clone(),
        );
        registry.register(
            "records_valid",
            "Valid events, late ones included: the raw dataset's rows",
            m.valid.clone(),
        );
        registry.register(
            "records_malformed",
            "Records that broke an event rule, by the rule (SPEC.md 1)",
            m.malformed.clone(),
        );
        registry.register(
            "records_late",
            "Valid events whose window was already final: archived in raw and sent to the DLQ",
            m.late.clone(),
        );
        registry.register(
            "records_future",
            "Events more than MAX_FUTURE_SKEW ahead of their reference time (a Kafka record's timestamp, or the clock): sent to the DLQ, not archived in raw",
            m.future.clone(),
        );
        registry.register(
            "windows_emitted",
            "Windows closed and written",
            m.windows.clone(),
        );
        registry.register(
            "window_rows",
            "Aggregated rows written: one per (window, postcode)",
            m.window_rows.clone(),
        );
        registry.register(
            "files_written",
            "Files published, by dataset",
            m.files.clone(),
        );
        registry.register(
            "rows_written",
            "Rows in published files, by dataset",
            m.rows.clone(),
        );
        registry.register_with_unit(
            "written",
            "Bytes of published files, by dataset",
            Unit::Bytes,
            m.bytes.clone(),
        );
        registry.register_with_unit(
            "watermark",
            "The pipeline's watermark (event time, epoch seconds); windows ending before it are final",
            Unit::Seconds,
            m.watermark.clone(),
        );
        registry.register_with_unit(
            "watermark_delay",
            "How far the watermark is behind the wall clock",
            Unit::Seconds,
            m.watermark_delay.clone(),
        );
        registry.register_with_unit(
            "partition_watermark",
            "Each source partition's watermark (its event-time clock minus the bound)",
            Unit::Seconds,
            m.partition_watermark.clone(),
        );
        registry.register(
            "consumer_lag",
            "Records of each Kafka partition not yet read (librdkafka's figure, every 5 s)",
            m.lag.clone(),
        );
        registry.register_with_unit(
            "storage_request",
            "Requests to S3 by action, each attempt timed",
            Unit::Seconds,
            m.storage_seconds.clone(),
        );
        registry.register(
            "storage_errors",
            "S3 requests that failed, by action (retried when waiting can fix them)",
            m.storage_errors.clone(),
        );
        registry.register_with_unit(
            "checkpoint_duration",
            "Time to finish, stage, name in a manifest and publish one checkpoint's files",
            Unit::Seconds,
            m.checkpoint_seconds.clone(),
        );
        registry.register_with_unit(
            "checkpoint_age",
            "Time since the last checkpoint",
            Unit::Seconds,
            m.checkpoint_age.clone(),
        );
        registry.register_with_unit(
            "group_merged",
            "The consumer group's aggregated rows are merged up to this event time (a window end, epoch seconds)",
            Unit::Seconds,
            m.group_merged.clone(),
        );
        registry.register_with_unit(
            "group_final",
            "Every partition of the topic is final up to this event time: windows ending by it can be merged",
            Unit::Seconds,
            m.group_final.clone(),
        );
        registry.register(
            "group_held_by",
            "1 for what holds the group's merging back: a partition (and the member whose checkpoint has it), one with no checkpoint yet, unpublished partial counts, or an unknown topic",
            m.group_held_by.clone(),
        );
        registry.register(
            "group_rows_merged",
            "Aggregated rows this processor merged for the group",
            m.group_rows.clone(),
        );
        metrics
    }

    /// A merge pass after a checkpoint found and did `pass`.
    pub fn merged(&self, pass: &Pass) {
        self.group_merged.set(pass.merged_to as f64 / 1000.0);
        if let Some(to) = pass.horizon.to {
            self.group_final.set(to as f64 / 1000.0);
        }
        self.group_rows.inc_by(pass.rows);
        self.group_held_by.clear();
        if let Some(hold) = &pass.horizon.held {
            let (reason, partition, member) = match hold {
                Hold::NoTopic => ("no_topic", None, None),
                Hold::Unclaimed { partition } => ("no_checkpoint", Some(partition), None),
                Hold::Partition {
                    partition, member, ..
                } => ("partition", Some(partition), Some(member.as_str())),
                Hold::Unpublished { member, .. } => ("unpublished", None, Some(member.as_str())),
            };
            let label = HoldLabel {
                reason: reason.into(),
                partition: partition.map(i32::to_string).unwrap_or_default(),
                member: member.unwrap_or_default().into(),
            };
            self.group_held_by.get_or_create(&label).set(1);
        }
    }

    /// A checkpoint took `took`.
    pub fn checkpointed(&self, took: Duration) {
        self.checkpoint_seconds.observe(took.as_secs_f64());
        *self.last_checkpoint.lock().expect("never poisoned") = Some(Instant::now());
        self.checkpoint_age.set(0.0);
    }

    /// (partition, records behind) of each partition read from Kafka.
    pub fn observe_lag(&self, lag: &[(Partition, i64)]) {
        for &(partition, behind) in lag {
            let label = PartitionLabel {
                partition: partition.to_string(),
            };
            self.lag.get_or_create(&label).set(behind);
        }
    }

    /// Brings the metrics up to what the router counted (`stats`) and where its watermarks
    /// are.
    pub fn observe(&self, stats: &Stats, watermarks: &Watermarks, now_ms: i64) {
        let mut seen = self.seen.lock().expect("never poisoned");
        // A router of a new assignment continues the counts; one that does not (a restart
        // of the counters) starts the deltas afresh.
        if stats.records < seen.records {
            *seen = Stats::default();
        }
        let add = |counter: &Counter, now: u64, before: u64| {
            counter.inc_by(now.saturating_sub(before));
        };
        add(&self.records, stats.records, seen.records);
        add(&self.valid, stats.valid, seen.valid);
        for kind in ErrorKind::ALL {
            let (now, before) = (stats.dead_letters(kind), seen.dead_letters(kind));
            if kind == ErrorKind::LateEvent {
                add(&self.late, now, before);
            } else if kind == ErrorKind::FutureTimestamp {
                add(&self.future, now, before);
            } else if now > before {
                let label = KindLabel {
                    error_kind: kind.to_string(),
                };
                add(&self.malformed.get_or_create(&label), now, before);
            }
        }
        add(&self.windows, stats.windows, seen.windows);
        add(&self.window_rows, stats.window_rows, seen.window_rows);
        for dataset in Dataset::ALL {
            let (now, before) = (stats.written(dataset), seen.written(dataset));
            let label = DatasetLabel {
                dataset: dataset.to_string(),
            };
            add(&self.files.get_or_create(&label), now.files, before.files);
            add(&self.rows.get_or_create(&label), now.rows, before.rows);
            add(&self.bytes.get_or_create(&label), now.bytes, before.bytes);
        }
        *seen = stats.clone();
        drop(seen);
        if let Some(at) = *self.last_checkpoint.lock().expect("never poisoned") {
            self.checkpoint_age.set(at.elapsed().as_secs_f64());
        }
        if let Some(watermark) = watermarks.current() {
            self.watermark.set(watermark as f64 / 1000.0);
            self.watermark_delay
                .set((now_ms - watermark).max(0) as f64 / 1000.0);
        }
        for (partition, clock) in watermarks.clocks() {
            let Some(time) = clock.time() else { continue };
            let label = PartitionLabel {
                partition: partition.to_string(),
            };
            self.partition_watermark
                .get_or_create(&label)
                .set((time - watermarks.bound_ms()) as f64 / 1000.0);
        }
    }
}

impl RequestObserver for PipelineMetrics {
    fn request(&self, action: &'static str, took: Duration, ok: bool) {
        // "upload part of" → "upload_part": the request, as a label value.
        let action = action
            .trim_end_matches(" of")
            .trim_end_matches(" to")
            .replace(' ', "_");
        let label = ActionLabel { action };
        self.storage_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if !ok {
            self.storage_errors.get_or_create(&label).inc();
        }
    }
}

/// The generator's metrics, with the original generator's meaning: events handed to Kafka,
/// events Kafka refused, and how long the broker took to acknowledge one.
pub struct GeneratorMetrics {
    sent: Counter,
    failed: Counter,
    latency: Histogram,
}

impl GeneratorMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(GeneratorMetrics {
            sent: Counter::default(),
            failed: Counter::default(),
            // 1 ms to about 16 s.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        });
        registry.register(
            "generator_events_sent",
            "Events the generator handed to the producer",
            metrics.sent.clone(),
        );
        registry.register(
            "generator_events_failed",
            "Events the broker refused",
            metrics.failed.clone(),
        );
        registry.register_with_unit(
            "generator_send_latency",
            "From handing an event to the producer to the broker acknowledging it",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        metrics
    }

    pub fn sent(&self) {
        self.sent.inc();
    }

    pub fn delivered(&self, latency: Duration) {
        self.latency.observe(latency.as_secs_f64());
    }

    pub fn failed(&self) {
        self.failed.inc();
    }
}

/// A registry whose names start with [`PREFIX`].
pub fn registry() -> Registry {
    Registry::with_prefix(PREFIX)
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::Horizon;

    #[test]
    fn a_merge_pass_says_how_far_the_group_is_merged_and_what_holds_it() {
        let mut registry = registry();
        let metrics = PipelineMetrics::register(&mut registry);
        let held = |partition| Hold::Partition {
            partition,
            member: "b".into(),
            final_to: Some(1_700_000_090_000),
        };
        let mut pass = Pass {
            merged_to: 1_700_000_040_000,
            horizon: Horizon {
                to: Some(1_700_000_090_000),
                held: Some(held(2)),
            },
            rows: 7,
        };
        metrics.merged(&pass);
        pass.horizon.held = Some(held(1));
        metrics.merged(&pass);
        let text = encode(&registry);
        assert!(
            text.contains("pageview_group_merged_seconds 1700000040.0"),
            "{text}"
        );
        assert!(
            text.contains("pageview_group_final_seconds 1700000090.0"),
            "{text}"
        );
        assert!(
            text.contains("pageview_group_rows_merged_total 14"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"pageview_group_held_by{reason="partition",partition="1",member="b"} 1"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"partition="2""#),
            "only the current hold: {text}"
        );
    }
}
