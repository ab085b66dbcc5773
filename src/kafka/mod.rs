//! The Kafka edge: topic set-up, the generator's producer, and keeping clients connected.

mod admin;
mod producer;
mod rebootstrap;

pub use admin::{TopicState, ensure_topic};
pub use producer::{KeyChoice, Produced, ProducerSettings, produce, producer_config};
pub use rebootstrap::{BrokerWatch, STATS_INTERVAL_MS};

/// What can go wrong talking to Kafka; each says what the operator should check.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Bad settings or an unreachable broker at start-up: fix the configuration.
    #[error("cannot reach Kafka at {servers}: {source}")]
    Unreachable {
        servers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot create topic {topic}: {source}")]
    CreateTopic {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    /// A record the broker refused for good (too large, not authorised): nothing to retry.
    #[error("Kafka refused {failed} events; the first: {first}")]
    Refused { failed: u64, first: String },
    #[error("Kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("cannot start the Kafka admin runtime: {0}")]
    Runtime(std::io::Error),
}
