//! A topic name → the topic, created with the requested partitions if it is missing.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

use super::{Cluster, Connection, KafkaError};

/// How long a request for metadata waits for an answer once the cluster has answered.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a client waiting for the cluster at start-up says so.
const WAITING_NOTE_EVERY: Duration = Duration::from_secs(10);
/// One metadata request of the start-up wait: between two, the client's errors are read.
const METADATA_STEP: Duration = Duration::from_millis(500);
/// How long one poll reads a client's queued events (logs, errors, token requests) while
/// nothing else is expected on it; polls repeat while errors come.
pub const EVENTS_DRAIN: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    Existed { partitions: i32 },
    Created { partitions: i32 },
}

/// A client that only asks for metadata; its polls deliver errors and token requests.
struct Probe(Connection);

impl ClientContext for Probe {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: ClientError, reason: &str) {
        self.0.observe(&error, reason);
    }

    fn log(&self, _: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.observe_log(facility, message);
    }

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.0.token()
    }
}

impl ConsumerContext for Probe {}

/// The metadata of `topic`, asked for until the cluster answers, however long an outage
/// lasts: every [`WAITING_NOTE_EVERY`] a line says what it waits for. Stops at once when the
/// client's errors show a setting no retry fixes, or when `stop` is set. `poll` delivers the
/// client's events.
pub fn await_metadata<C: ClientContext>(
    client: &Client<C>,
    connection: &Connection,
    poll: impl Fn(),
    topic: &str,
    servers: &str,
    stop: &AtomicBool,
) -> Result<Metadata, KafkaError> {
    let started = Instant::now();
    let mut next_note = started + WAITING_NOTE_EVERY;
    loop {
        let answer = client.fetch_metadata(Some(topic), METADATA_STEP);
        poll();
        if let Some(problem) = connection.problem() {
            return Err(KafkaError::Misconfigured(problem));
        }
        if let Ok(metadata) = answer {
            return Ok(metadata);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(KafkaError::Interrupted {
                servers: servers.to_string(),
            });
        }
        let now = Instant::now();
        if now >= next_note {
            let last = connection
                .complaint()
                .unwrap_or_else(|| "no error from the client".into());
            tracing::warn!(
                "still waiting for Kafka at {servers}: no answer for {} s (last: {last})",
                now.duration_since(started).as_secs()
            );
            next_note = now + WAITING_NOTE_EVERY;
        }
    }
}

/// Makes sure `topic` exists, creating it with `partitions` partitions and the cluster's
/// default replication factor when it does not; waits for the cluster until `stop`.
pub fn ensure_topic(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
) -> Result<TopicState, KafkaError> {
    let setup = |source| KafkaError::Setup {
        servers: cluster.servers.clone(),
        source,
    };
    // Asking for a missing topic's metadata must not create it with the broker's defaults
    // (one partition, on brokers that auto-create) before it is created here.
    let probe: BaseConsumer<Probe> = cluster
        .client_config(&[("allow.auto.create.topics", "false")])
        .create_with_context(Probe(Connection::new(cluster)))
        .map_err(setup)?;
    let poll = || while probe.poll(EVENTS_DRAIN).is_some() {};
    let metadata = await_metadata(
        probe.client(),
        &probe.context().0,
        poll,
        topic,
        &cluster.servers,
        stop,
    )?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    if let Some(found) = found.filter(|t| t.error().is_none()) {
        return Ok(TopicState::Existed {
            partitions: found.partitions().len() as i32,
        });
    }
    let admin: AdminClient<DefaultClientContext> =
        cluster.client_config(&[]).create().map_err(setup)?;
    if cluster.security.msk_iam_region().is_some() {
        give_token(admin.inner(), &probe.context().0)?;
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
            ensure_topic(cluster, topic, partitions, stop)
        }
        Some(Err((_, code))) => Err(KafkaError::CreateTopic {
            topic: topic.to_string(),
            source: rdkafka::error::KafkaError::AdminOp(code),
        }),
        _ => {
            wait_until_served(probe.client(), topic, partitions);
            Ok(TopicState::Created { partitions })
        }
    }
}

/// rdkafka's admin client never polls the queue librdkafka asks for OAUTHBEARER tokens on,
/// so it is handed one up front; it lives far longer than the client's few requests.
fn give_token(
    admin: &Client<DefaultClientContext>,
    connection: &Connection,
) -> Result<(), KafkaError> {
    let refused = |problem: String| {
        KafkaError::Misconfigured(format!("cannot sign an AWS MSK IAM token: {problem}"))
    };
    let token = connection.token().map_err(|e| refused(e.to_string()))?;
    let value = CString::new(token.token).map_err(|e| refused(e.to_string()))?;
    let principal = CString::new(token.principal_name).map_err(|e| refused(e.to_string()))?;
    let mut error = [0 as std::ffi::c_char; 512];
    // SAFETY: the client is alive for the borrow; librdkafka copies the strings, and the
    // error buffer's size is passed along with it.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_oauthbearer_set_token(
            admin.native_ptr(),
            value.as_ptr(),
            token.lifetime_ms,
            principal.as_ptr(),
            std::ptr::null_mut(),
            0,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if code != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: librdkafka wrote a NUL-terminated message into the buffer.
        let message = unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) };
        return Err(refused(message.to_string_lossy().into_owned()));
    }
    Ok(())
}

/// Waits (at most [`CONNECT_TIMEOUT`]) until the cluster's metadata has every partition of
/// a topic just created with a leader: a consumer that joins before would be assigned only
/// the partitions known then, and learn of the others minutes later.
fn wait_until_served<C: ClientContext>(client: &Client<C>, topic: &str, partitions: i32) {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while Instant::now() < deadline {
        let served = client
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
