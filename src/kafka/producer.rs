//! Generated events → Kafka messages: acks=all, idempotent, gzip (as the original), paced to
//! the rate, and never given up on: during a broker outage sends wait and retry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError as ClientError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message};

use super::{BrokerWatch, Cluster, Connection, KafkaError, STATS_INTERVAL_MS};
use crate::generate::Generator;
use crate::metrics::GeneratorMetrics;

/// What each message is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyChoice {
    /// No key: the producer spreads messages over partitions (the original's choice).
    None,
    /// The event's postcode: all events of a postcode land in one partition.
    Postcode,
}

#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub cluster: Cluster,
    pub topic: String,
    pub key: KeyChoice,
}

/// What the broker acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub delivered: u64,
}

/// Counts the broker's answers; librdkafka calls it from `poll`.
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
    brokers: BrokerWatch,
    connection: Connection,
    metrics: Option<Arc<GeneratorMetrics>>,
}

impl ClientContext for Deliveries {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn stats_raw(&self, statistics: &[u8]) {
        self.brokers.observe(statistics);
    }

    /// librdkafka retries every error itself; a misconfiguration ends [`produce`].
    fn error(&self, error: ClientError, reason: &str) {
        self.connection.observe(&error, reason);
    }

    fn log(&self, _: RDKafkaLogLevel, facility: &str, message: &str) {
        self.connection.observe_log(facility, message);
    }

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.connection.token()
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                // librdkafka stamps a message with its creation time when it is sent.
                if let (Some(metrics), Some(sent_ms)) =
                    (&self.metrics, message.timestamp().to_millis())
                {
                    let ms = (crate::generate::now_ms() - sent_ms).max(0);
                    metrics.delivered(Duration::from_millis(ms as u64));
                }
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(metrics) = &self.metrics {
                    metrics.failed();
                }
                let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// The generator's producer settings (the original's: acks=all, idempotent, gzip).
pub fn producer_config(cluster: &Cluster) -> ClientConfig {
    cluster.client_config(&[
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("compression.type", "gzip"),
        ("linger.ms", "5"),
        // 0 = no delivery deadline: an outage delays messages, it does not fail them.
        ("message.timeout.ms", "0"),
        ("statistics.interval.ms", STATS_INTERVAL_MS),
    ])
}

/// How long a full local queue is polled before the send is tried again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

/// Sends the generator's events until it is done or `stop` is set, then waits until every
/// sent event is acknowledged, however long an outage lasts (a second Ctrl-C ends that).
pub fn produce(
    generator: &mut Generator,
    settings: &ProducerSettings,
    stop: &AtomicBool,
    metrics: Option<Arc<GeneratorMetrics>>,
) -> Result<Produced, KafkaError> {
    let deliveries = Deliveries {
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_failure: Mutex::new(None),
        brokers: BrokerWatch::default(),
        connection: Connection::new(&settings.cluster),
        metrics: metrics.clone(),
    };
    let producer: BaseProducer<Deliveries> =
        producer_config(&settings.cluster).create_with_context(deliveries)?;
    let misconfigured = || producer.context().connection.problem();
    let pace = generator.pace();
    let mut line = Vec::with_capacity(256);
    let between = || {
        producer.poll(Duration::ZERO);
        keep_brokers(&producer, &settings.cluster.servers);
    };
    while pace.wait_for(generator.made(), stop, between) && !generator.is_done() {
        if let Some(problem) = misconfigured() {
            return Err(KafkaError::Misconfigured(problem));
        }
        line.clear();
        let postcode = generator.next_line(&mut line);
        let mut record = BaseRecord::to(&settings.topic).payload(&line);
        if settings.key == KeyChoice::Postcode {
            record = record.key(postcode);
        }
        loop {
            match producer.send(record) {
                Ok(()) => {
                    if let Some(metrics) = &metrics {
                        metrics.sent();
                    }
                    break;
                }
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), unsent)) => {
                    record = unsent;
                    producer.poll(QUEUE_FULL_WAIT);
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        between();
    }
    while producer.in_flight_count() > 0 {
        // A timeout here only means the broker has not answered yet: keep waiting.
        let _ = producer.flush(Duration::from_secs(1));
        if let Some(problem) = misconfigured() {
            return Err(KafkaError::Misconfigured(problem));
        }
        keep_brokers(&producer, &settings.cluster.servers);
    }
    let deliveries = producer.context();
    let failed = deliveries.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = deliveries
            .first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(KafkaError::Refused { failed, first });
    }
    Ok(Produced {
        delivered: deliveries.delivered.load(Ordering::Relaxed),
    })
}

/// See [`BrokerWatch`].
fn keep_brokers(producer: &BaseProducer<Deliveries>, servers: &str) {
    if producer.context().brokers.heal(producer.client(), servers) {
        tracing::warn!(
            "kafka: the producer had forgotten every broker; bootstrapping again from {servers}"
        );
    }
}
