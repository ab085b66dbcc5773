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
    /// librdkafka refused to make a client: a certificate or key it cannot load, a property
    /// value it rejects. Fix the configuration.
    #[error("cannot set up a Kafka client for {servers}: {source}{}", setting_named_in(&source.to_string()))]
    Setup {
        servers: String,
        source: rdkafka::error::KafkaError,
    },
    /// Stopped (Ctrl-C, SIGTERM) while waiting for the cluster to answer at start-up.
    #[error("stopped while waiting for Kafka at {servers} to answer")]
    Interrupted { servers: String },
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

/// ` (check SETTING)` for the first librdkafka property with a setting of its own that
/// `message` names, so an error in librdkafka's words points at pageview's.
fn setting_named_in(message: &str) -> String {
    security::RESERVED
        .iter()
        .find_map(|(property, reserved)| match reserved {
            security::Reserved::Setting(setting) if message.contains(&format!("{property} ")) => {
                Some(format!(" (check {setting})"))
            }
            _ => None,
        })
        .unwrap_or_default()
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
