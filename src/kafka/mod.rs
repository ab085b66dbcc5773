//! The Kafka edge: how clients reach a cluster (security, what their errors mean), topic
//! set-up, the generator's producer, and keeping clients connected.

mod admin;
mod connection;
mod msk_iam;
mod producer;
mod rebootstrap;
pub mod security;

pub use admin::{CONNECT_TIMEOUT, EVENTS_DRAIN, TopicState, await_metadata, ensure_topic};
pub use connection::Connection;
pub use producer::{KeyChoice, Produced, ProducerSettings, produce, producer_config};
pub use rebootstrap::{BrokerWatch, STATS_INTERVAL_MS};
pub use security::Cluster;

/// What can go wrong talking to Kafka; each says what the operator should check.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Bad settings or an unreachable broker at start-up: fix the configuration.
    #[error("cannot reach Kafka at {servers}: {source}")]
    Unreachable {
        servers: String,
        source: rdkafka::error::KafkaError,
    },
    /// The cluster did not answer at start-up; `last` is the client's last complaint.
    #[error("cannot reach Kafka at {servers}: no answer in {} s{}", CONNECT_TIMEOUT.as_secs(), last.as_ref().map(|l| format!(" (last: {l})")).unwrap_or_default())]
    Silent {
        servers: String,
        last: Option<String>,
    },
    /// A setting no retry can fix (credentials, certificates, protocol), as
    /// [`Connection::problem`] words it.
    #[error("{0}")]
    Misconfigured(String),
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

/// Checks every property of `cluster`'s clients with librdkafka, without connecting, so a
/// bad pass-through option fails at start-up. The message names keys, never values.
pub fn check_client_config(cluster: &Cluster) -> Result<(), String> {
    cluster
        .client_config(&[])
        .create_native_config()
        .map(drop)
        .map_err(|e| {
            let mut message = e.to_string();
            for (_, value) in &cluster.security.options {
                if !value.expose().is_empty() {
                    message = message.replace(value.expose(), "***");
                }
            }
            message
        })
}
