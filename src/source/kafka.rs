//! A Kafka consumer group → records with their topic, partition and offset.
//!
//! Partitions come and go by rebalance. On each assignment the checkpoint manifests, not
//! Kafka's committed offsets, say where every partition resumes: the assignment is made with
//! those offsets inside the rebalance callback, before any record of it is fetched. The
//! processor learns of each rebalance as a [`Rebalanced`] event before the records after it.

use std::collections::VecDeque;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use super::{Origin, Record};
use crate::checkpoint::{CheckpointError, Recovery};
use crate::commit::CommitPoint;
use crate::kafka::{
    BrokerWatch, Cluster, Connection, EVENTS_DRAIN, KafkaError, STATS_INTERVAL_MS, await_metadata,
};

/// How long a request for metadata or offsets waits for the cluster.
const CONNECT_TIMEOUT: Duration = crate::kafka::CONNECT_TIMEOUT;
/// The same client complaint (broker down, …) is printed at most this often.
const COMPLAINT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub cluster: Cluster,
    pub topic: String,
    pub group: String,
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    /// A checkpoint at least this often.
    pub checkpoint_interval: Duration,
}

impl ConsumerSettings {
    /// Names this processor in checkpoint manifests: its static group id, or host and pid.
    pub fn member_name(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}

/// How long a stopping processor waits to leave its group. Leaving lets the broker hand the
/// partitions on at once, but with the broker down it never completes; everything is already
/// in the last checkpoint, so the process may exit regardless.
const LEAVE_GROUP_WAIT: Duration = Duration::from_secs(5);

/// A change of the partitions this processor owns.
#[derive(Debug)]
pub enum Rebalanced {
    /// Every partition was taken away: state not yet in a manifest must be dropped, since
    /// the next owner resumes from the manifests.
    Revoked,
    /// New partitions and the state they resume from.
    Assigned(Assignment),
    /// The manifests could not be read; nothing was assigned.
    Failed(CheckpointError),
}

#[derive(Debug)]
pub struct Assignment {
    pub partitions: Vec<i32>,
    pub recovery: Recovery,
}

/// librdkafka calls this from `poll`, on the processing thread.
struct GroupContext {
    topic: String,
    /// Where assigned partitions resume.
    point: Arc<dyn CommitPoint>,
    events: Mutex<VecDeque<Rebalanced>>,
    last_complaint: Mutex<Option<(String, Instant)>>,
    /// Until the cluster has answered once, start-up reports failure itself, in one line.
    reached: AtomicBool,
    brokers: BrokerWatch,
    /// The broker went away, or librdkafka gave up on the session and rejoined under a new
    /// member id: a fence that follows may be this member's own doing.
    lost_contact: AtomicBool,
    /// From the last statistics: the member is in the group, not joining or rebalancing.
    steady: AtomicBool,
    /// From the last statistics: (partition, records behind the partition's end) of each
    /// partition this member fetches.
    lag: Mutex<Vec<(i32, i64)>>,
    /// Where assigned partitions forward their messages ([`FetchQueue`]).
    fetch: AtomicPtr<rdsys::rd_kafka_queue_t>,
    connection: Connection,
}

/// The parts of librdkafka's statistics about the group and the partitions' lag.
#[derive(serde::Deserialize)]
struct GroupStatistics {
    cgrp: Option<GroupState>,
    #[serde(default)]
    topics: std::collections::HashMap<String, TopicStatistics>,
}

#[derive(serde::Deserialize)]
struct TopicStatistics {
    partitions: std::collections::HashMap<String, PartitionStatistics>,
}

#[derive(serde::Deserialize)]
struct PartitionStatistics {
    partition: i32,
    /// -1 until known: the partition is not fetched, or its end is not yet known.
    consumer_lag: i64,
}

#[derive(serde::Deserialize)]
struct GroupState {
    join_state: String,
}

impl GroupContext {
    fn push(&self, event: Rebalanced) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(event);
    }

    fn take(&self) -> Option<Rebalanced> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let recovery = match self.point.recover(&partitions) {
            Ok(recovery) => recovery,
            Err(e) => return self.push(Rebalanced::Failed(e)),
        };
        for &partition in &partitions {
            let offset = recovery
                .start(partition)
                .map_or(Offset::Beginning, Offset::Offset);
            // The partition is in the list, so this cannot fail.
            let _ = tpl.set_partition_offset(&self.topic, partition, offset);
        }
        self.forward(consumer, &partitions);
        if let Err(e) = consumer.assign(tpl) {
            return self.push(Rebalanced::Failed(CheckpointError::Assign(e.to_string())));
        }
        self.push(Rebalanced::Assigned(Assignment {
            partitions,
            recovery,
        }));
    }

    /// Sends the messages of `partitions` to the fetch queue. librdkafka keeps a forward the
    /// application set when it starts fetching, and moves what is already queued.
    fn forward(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let fetch = self.fetch.load(Ordering::Relaxed);
        let Ok(topic) = CString::new(self.topic.as_str()) else {
            return;
        };
        if fetch.is_null() {
            return;
        }
        for &partition in partitions {
            // SAFETY: the client and the fetch queue are alive during this callback (the
            // queue is destroyed only after the consumer stopped polling); the partition
            // queue handle is released right after use.
            unsafe {
                let queue = rdsys::rd_kafka_queue_get_partition(
                    consumer.client().native_ptr(),
                    topic.as_ptr(),
                    partition,
                );
                if !queue.is_null() {
                    rdsys::rd_kafka_queue_forward(queue, fetch);
                    rdsys::rd_kafka_queue_destroy(queue);
                }
            }
        }
    }
}

impl ClientContext for GroupContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    /// Client errors are mostly transient (a broker restarting); librdkafka retries them
    /// itself, so they are reported, throttled, and never stop the processor. Before the
    /// cluster first answered, a misconfiguration stops start-up instead.
    fn error(&self, error: ClientError, reason: &str) {
        self.connection.observe(&error, reason);
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.lost_contact.store(true, Ordering::Relaxed);
        }
        // Before the cluster answered, start-up fails with its own line; a fatal error stops
        // the processor, which says why.
        if !self.reached.load(Ordering::Relaxed)
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
        {
            return;
        }
        let line = format!("{error}: {reason}");
        let mut last = self
            .last_complaint
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let repeated = last
            .as_ref()
            .is_some_and(|(l, at)| *l == line && at.elapsed() < COMPLAINT_EVERY);
        if !repeated {
            tracing::warn!("kafka: {line} (retrying)");
            *last = Some((line, Instant::now()));
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.brokers.observe(statistics);
        if let Ok(statistics) = serde_json::from_slice::<GroupStatistics>(statistics) {
            let steady = statistics.cgrp.is_none_or(|g| g.join_state == "steady");
            self.steady.store(steady, Ordering::Relaxed);
            let lag = statistics
                .topics
                .get(&self.topic)
                .map(|t| {
                    t.partitions
                        .values()
                        .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                        .map(|p| (p.partition, p.consumer_lag))
                        .collect()
                })
                .unwrap_or_default();
            *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
        }
    }

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.connection.token()
    }

    /// Only the session timeout matters here; everything worth saying reaches `error`, and
    /// the rest is logged at debug level.
    fn log(&self, _: RDKafkaLogLevel, facility: &str, message: &str) {
        if facility == "SESSTMOUT" {
            self.lost_contact.store(true, Ordering::Relaxed);
        }
        self.connection.observe_log(facility, message);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            _ => {
                let _ = consumer.unassign();
                self.push(Rebalanced::Revoked);
            }
        }
    }
}

/// Whether a reader got to the given (partition, offset after the last record) ends.
pub type HasRead<'a> = &'a dyn Fn(&[(i32, i64)]) -> bool;

/// A member of a consumer group, subscribed to one topic.
pub struct GroupConsumer {
    /// Declared first so that it is destroyed before the client.
    fetch: FetchQueue,
    consumer: BaseConsumer<GroupContext>,
    settings: ConsumerSettings,
    point: Arc<dyn CommitPoint>,
}

impl GroupConsumer {
    /// Joins the group, once the cluster answers (see [`await_metadata`]) or until `stop`.
    /// Assigned partitions resume where `point` says.
    pub fn join(
        settings: &ConsumerSettings,
        point: Arc<dyn CommitPoint>,
        stop: &AtomicBool,
    ) -> Result<Self, KafkaError> {
        let consumer = connect(settings, point.clone())?;
        // Before the subscription the consumer queue holds only the client's own events.
        let poll = || while consumer.poll(EVENTS_DRAIN).is_some() {};
        await_metadata(
            consumer.client(),
            &consumer.context().connection,
            poll,
            &settings.topic,
            &settings.cluster.servers,
            stop,
        )?;
        consumer.context().reached.store(true, Ordering::Relaxed);
        let fetch = FetchQueue::new(&consumer);
        consumer.subscribe(&[&settings.topic])?;
        Ok(GroupConsumer {
            fetch,
            consumer,
            settings: settings.clone(),
            point,
        })
    }

    /// Whether `error` is likely this member's own doing: while the broker was away its
    /// session expired, librdkafka rejoined under a new member id, and a request still
    /// carrying the old id was refused as fenced (as in librdkafka issue #3437). Another
    /// process with the same `group.instance.id` fences a member that never lost the broker.
    /// Each loss of contact excuses one fence, so two such processors cannot take turns
    /// forever: the second fence stops one of them.
    pub fn fenced_by_itself(&self, error: &ClientError) -> bool {
        matches!(
            error,
            ClientError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId)
        ) && self
            .consumer
            .context()
            .lost_contact
            .swap(false, Ordering::Relaxed)
    }

    /// Where each partition of the topic holding records ends now: (partition, offset after
    /// its last record).
    pub fn ends(&self) -> Result<Vec<(i32, i64)>, KafkaError> {
        let topic = &self.settings.topic;
        let metadata = self.consumer.fetch_metadata(Some(topic), CONNECT_TIMEOUT)?;
        let mut ends = Vec::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) =
                self.consumer
                    .fetch_watermarks(topic, partition.id(), CONNECT_TIMEOUT)?;
            if high > low {
                ends.push((partition.id(), high));
            }
        }
        Ok(ends)
    }

    /// (partition, records behind its end) as of librdkafka's last statistics (every 5 s).
    pub fn lag(&self) -> Vec<(i32, i64)> {
        let lag = self.consumer.context().lag.lock();
        lag.unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a consumer that has delivered nothing for a while is stuck rather than idle:
    /// the broker answers, yet a partition it owns has records it did not read (`has_read`
    /// says whether the reader got to the given (partition, end) offsets; `None` without an
    /// assignment: then the member should be settled in the group). Seen after a lone broker
    /// stalled and came back, when librdkafka may stop fetching a partition or never finish
    /// rejoining, with no error; a new client recovers.
    pub fn stuck(&self, has_read: Option<HasRead<'_>>) -> bool {
        // Unanswered: the broker is away, which librdkafka waits out by itself.
        let Ok(ends) = self.ends() else {
            return false;
        };
        match has_read {
            Some(has_read) => !has_read(&ends),
            None => !self.consumer.context().steady.load(Ordering::Relaxed),
        }
    }

    /// The settings of this member's group.
    pub fn settings(&self) -> &ConsumerSettings {
        &self.settings
    }

    /// What a member without partitions waits for, in a line for the operator.
    pub fn waiting_for(&self) -> String {
        let settings = &self.settings;
        let why = self
            .consumer
            .context()
            .connection
            .complaint()
            .unwrap_or_else(|| "no error from the client".into());
        format!(
            "waiting for partitions of {} from group {} at {} (last: {why})",
            settings.topic, settings.group, settings.cluster.servers
        )
    }

    /// See [`BrokerWatch`]: called when nothing came, the only time a client can be stuck.
    fn keep_brokers(&self) {
        let context = self.consumer.context();
        if context
            .brokers
            .heal(self.consumer.client(), &self.settings.cluster.servers)
        {
            tracing::warn!(
                "kafka: the client had forgotten every broker; bootstrapping again from {}",
                self.settings.cluster.servers
            );
            context.lost_contact.store(true, Ordering::Relaxed);
        }
    }

    /// Replaces a fenced or stuck client with a new one that joins again; the new
    /// assignment resumes from the manifests like any other.
    pub fn rejoin(&mut self) -> Result<(), KafkaError> {
        let consumer = connect(&self.settings, self.point.clone())?;
        consumer.context().reached.store(true, Ordering::Relaxed);
        let fetch = FetchQueue::new(&consumer);
        consumer.subscribe(&[&self.settings.topic])?;
        // Closing a client leaves the group, which a stuck one may never finish: it closes
        // on a thread of its own.
        let old = (
            std::mem::replace(&mut self.fetch, fetch),
            std::mem::replace(&mut self.consumer, consumer),
        );
        std::thread::spawn(move || drop(old));
        Ok(())
    }

    pub fn source(&self) -> KafkaSource<'_> {
        KafkaSource {
            group: self,
            held: None,
            pending: false,
            batch: Vec::with_capacity(BATCH),
            next: 0,
            origins: Vec::new(),
            bytes_read: 0,
        }
    }

    /// Leaves the group, waiting at most [`LEAVE_GROUP_WAIT`] for it.
    pub fn leave(self) {
        let (left, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(self);
            let _ = left.send(());
        });
        let _ = wait.recv_timeout(LEAVE_GROUP_WAIT);
    }

    /// Tells Kafka how far the manifests go, for lag metrics and tools; a failed commit only
    /// delays that, so it is not an error.
    pub fn commit(&self, offsets: &[(i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for &(partition, next) in offsets {
            tpl.add_partition_offset(&self.settings.topic, partition, Offset::Offset(next))
                .expect("an offset is a valid position");
        }
        if tpl.count() > 0 {
            let _ = self.consumer.commit(&tpl, CommitMode::Async);
        }
    }
}

/// A client configured for the group, not yet subscribed.
fn connect(
    settings: &ConsumerSettings,
    point: Arc<dyn CommitPoint>,
) -> Result<BaseConsumer<GroupContext>, KafkaError> {
    let session_timeout = settings.session_timeout.as_millis().to_string();
    let mut own = vec![
        ("group.id", settings.group.as_str()),
        // Manifests decide what is done; Kafka's offsets are committed after them.
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        // Eager: every partition is revoked before any is reassigned, so no two processors
        // ever hold one partition's state.
        ("partition.assignment.strategy", "roundrobin"),
        ("session.timeout.ms", &session_timeout),
        ("heartbeat.interval.ms", "1000"),
        // When the processor is the slower side, the prefetch queue fills and librdkafka
        // holds the next fetch back this long: 1 s by default, during which the processor,
        // having drained the queue in half that, would sit idle.
        ("fetch.queue.backoff.ms", "10"),
        ("statistics.interval.ms", STATS_INTERVAL_MS),
    ];
    if let Some(id) = &settings.instance_id {
        own.push(("group.instance.id", id));
    }
    let config = settings.cluster.client_config(&own);
    let context = GroupContext {
        topic: settings.topic.clone(),
        point,
        events: Mutex::new(VecDeque::new()),
        last_complaint: Mutex::new(None),
        reached: AtomicBool::new(false),
        lost_contact: AtomicBool::new(false),
        steady: AtomicBool::new(true),
        lag: Mutex::new(Vec::new()),
        fetch: AtomicPtr::new(std::ptr::null_mut()),
        brokers: BrokerWatch::default(),
        connection: Connection::new(&settings.cluster),
    };
    config
        .create_with_context(context)
        .map_err(|source| KafkaError::Setup {
            servers: settings.cluster.servers.clone(),
            source,
        })
}

/// Messages read per call from the fetch queue. One message per poll cost the processing
/// thread about a third of its time (an event, a queue lock and two clock reads each).
const BATCH: usize = 1024;

/// The queue every assigned partition forwards its messages to, read a batch at a time; the
/// consumer queue keeps rebalances, errors and statistics.
struct FetchQueue(*mut rdsys::rd_kafka_queue_t);

// SAFETY: librdkafka queues may be used and destroyed from any thread.
unsafe impl Send for FetchQueue {}
// SAFETY: as above; the handle itself is never changed.
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    fn new(consumer: &BaseConsumer<GroupContext>) -> Self {
        // SAFETY: the client is alive; the queue is destroyed before it (GroupConsumer's
        // field order).
        let queue = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        consumer.context().fetch.store(queue, Ordering::Relaxed);
        FetchQueue(queue)
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new and destroyed once; partitions still
        // forwarding to it keep it alive inside librdkafka until they stop.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) };
    }
}

/// The origin of records from `partition`, made once per partition so each record's origin
/// is a borrow, not an allocation.
fn origin<'o>(origins: &'o mut Vec<Origin>, topic: &str, partition: i32) -> &'o Origin {
    let index = partition as usize;
    if origins.len() <= index {
        let topic: std::sync::Arc<str> = topic.into();
        origins.extend((origins.len()..=index).map(|p| Origin::Topic {
            topic: topic.clone(),
            partition: p as i32,
        }));
    }
    &origins[index]
}

/// What the consumer has for the pipeline right now.
pub enum Polled<'a> {
    Record(Record<'a>),
    Rebalanced(Rebalanced),
    Idle,
    /// The client can never consume again (e.g. fenced by another processor with the same
    /// `group.instance.id`): the processor must stop rather than wait forever.
    Fatal(ClientError),
}

pub struct KafkaSource<'c> {
    group: &'c GroupConsumer,
    /// The message handed out last, or fetched but not handed out yet (`pending`); records
    /// borrow its payload.
    held: Option<BorrowedMessage<'c>>,
    pending: bool,
    /// Messages read from the fetch queue in one call, handed out in order from `next`;
    /// records borrow their payloads until the next batch is read.
    batch: Vec<*mut rdsys::rd_kafka_message_t>,
    next: usize,
    /// Per partition, so each record's origin is a borrow, not an allocation.
    origins: Vec<Origin>,
    bytes_read: u64,
}

impl<'c> KafkaSource<'c> {
    /// Waits at most `wait` for the next record. A rebalance comes out before the records
    /// fetched after it: the consumer queue, where rebalances arrive, is served only once the
    /// batch in hand is used up, and a rebalance outdates what the fetch queue still holds.
    pub fn poll(&mut self, wait: Duration) -> Polled<'_> {
        let context = self.group.consumer.context();
        if let Some(event) = context.take() {
            return Polled::Rebalanced(event);
        }
        if !std::mem::take(&mut self.pending) {
            self.held = None;
            if self.next_in_batch() {
                return self.batch_record();
            }
            match self.group.consumer.poll(Duration::ZERO) {
                // A partition not forwarded to the fetch queue.
                Some(Ok(message)) => self.held = Some(message),
                Some(Err(e @ ClientError::MessageConsumptionFatal(_))) => return Polled::Fatal(e),
                // Client errors reach GroupContext::error too; librdkafka retries them.
                Some(Err(_)) | None => {
                    if let Some(event) = context.take() {
                        return Polled::Rebalanced(event);
                    }
                    // Whatever is queued, without waiting; else the first message to come,
                    // since a batch call waits until its batch is full.
                    if self.read_batch(Duration::ZERO, BATCH) || self.read_batch(wait, 1) {
                        return self.batch_record();
                    }
                    self.group.keep_brokers();
                    return match context.take() {
                        Some(event) => Polled::Rebalanced(event),
                        None => Polled::Idle,
                    };
                }
            }
            if let Some(event) = context.take() {
                // The message waits until the processor has seen the rebalance.
                self.pending = true;
                return Polled::Rebalanced(event);
            }
        }
        let message = self.held.as_ref().expect("a message is held");
        let bytes = message.payload().unwrap_or_default();
        self.bytes_read += bytes.len() as u64;
        let origin = origin(
            &mut self.origins,
            &self.group.settings.topic,
            message.partition(),
        );
        Polled::Record(Record {
            bytes,
            offset: message.offset(),
            origin,
        })
    }

    /// Moves `next` to the next message of the batch that carries a record (the others are
    /// errors librdkafka reports and retries itself); false once the batch is used up.
    fn next_in_batch(&mut self) -> bool {
        while let Some(&message) = self.batch.get(self.next) {
            // SAFETY: messages of the batch are alive until `release`.
            if unsafe { (*message).err } == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return true;
            }
            self.next += 1;
        }
        false
    }

    /// The record at `next`, which [`Self::next_in_batch`] found.
    fn batch_record(&mut self) -> Polled<'_> {
        let message = self.batch[self.next];
        self.next += 1;
        // SAFETY: the message is alive until `release`, which takes `&mut self` and so cannot
        // run while the record borrows it; librdkafka gives `len` bytes at `payload`.
        let m = unsafe { &*message };
        let bytes = if m.payload.is_null() {
            &[][..]
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) }
        };
        self.bytes_read += bytes.len() as u64;
        let origin = origin(&mut self.origins, &self.group.settings.topic, m.partition);
        Polled::Record(Record {
            bytes,
            offset: m.offset,
            origin,
        })
    }

    /// Releases the batch in hand and reads up to `limit` messages, waiting at most `wait`;
    /// true if they hold a record.
    fn read_batch(&mut self, wait: Duration, limit: usize) -> bool {
        self.release();
        let wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the fetch queue lives as long as the group this source borrows; librdkafka
        // writes at most `limit` (≤ capacity) message pointers, whose count it returns.
        let read = unsafe {
            let read = rdsys::rd_kafka_consume_batch_queue(
                self.group.fetch.0,
                wait_ms,
                self.batch.as_mut_ptr(),
                limit.min(self.batch.capacity()),
            );
            self.batch.set_len(read.max(0) as usize);
            read
        };
        read > 0 && self.next_in_batch()
    }

    fn release(&mut self) {
        for message in self.batch.drain(..) {
            // SAFETY: each message of the batch is destroyed once, here.
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
        self.next = 0;
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

impl Drop for KafkaSource<'_> {
    fn drop(&mut self) {
        self.release();
    }
}
