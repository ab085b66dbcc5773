//! A topic name → the topic, created with the requested partitions if it is missing.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaError;

/// How long start-up waits for the cluster's metadata before calling the address bad.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    Existed { partitions: i32 },
    Created { partitions: i32 },
}

/// Makes sure `topic` exists, creating it with `partitions` partitions and the cluster's
/// default replication factor when it does not.
pub fn ensure_topic(servers: &str, topic: &str, partitions: i32) -> Result<TopicState, KafkaError> {
    let unreachable = |source| KafkaError::Unreachable {
        servers: servers.to_string(),
        source,
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        // Asking for a missing topic's metadata must not create it with the broker's
        // defaults (one partition, on brokers that auto-create) before we create it here.
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(unreachable)?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
        .map_err(unreachable)?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    if let Some(found) = found.filter(|t| t.error().is_none()) {
        return Ok(TopicState::Existed {
            partitions: found.partitions().len() as i32,
        });
    }
    // -1: the cluster's default.replication.factor, right for one broker and for many.
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(KafkaError::Runtime)?;
    let results = runtime
        .block_on(admin.create_topics([&new_topic], &AdminOptions::new()))
        .map_err(|source| KafkaError::CreateTopic {
            topic: topic.to_string(),
            source,
        })?;
    match results.into_iter().next() {
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
            // Another client created it in between; that is as good.
            ensure_topic(servers, topic, partitions)
        }
        Some(Err((_, code))) => Err(KafkaError::CreateTopic {
            topic: topic.to_string(),
            source: rdkafka::error::KafkaError::AdminOp(code),
        }),
        _ => {
            wait_until_served(&admin, topic, partitions);
            Ok(TopicState::Created { partitions })
        }
    }
}

/// Waits (at most [`CONNECT_TIMEOUT`]) until the cluster's metadata has every partition of
/// a topic just created with a leader: a consumer that joins before would be assigned only
/// the partitions known then, and learn of the others minutes later.
fn wait_until_served(admin: &AdminClient<DefaultClientContext>, topic: &str, partitions: i32) {
    let deadline = std::time::Instant::now() + CONNECT_TIMEOUT;
    while std::time::Instant::now() < deadline {
        let served = admin
            .inner()
            .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
            .is_ok_and(|metadata| {
                metadata.topics().iter().any(|t| {
                    t.name() == topic
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            });
        if served {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
