//! A Kafka consumer group → records with their topic, partition and offset.
//!
//! Partitions come and go by rebalance. On each assignment the commit point (checkpoint
//! manifests), not Kafka's committed offsets, says where every partition resumes: the
//! assignment is made with those offsets inside the rebalance callback, before any record of
//! it is fetched. The callback only reads; the processor learns of each rebalance as a
//! [`Poll::Assigned`] or [`Poll::Revoked`] before the records after it, and finishes the
//! recovery itself.

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
use rdkafka::message::{Message, OwnedMessage, Timestamp};
use rdkafka::topic_partition_list::{Offset as Position, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use super::{
    Assignment, Decoded, HasRead, Offset, Origin, Partition, Poll, Record, RecordTime, Source,
    SourceError, Ticked,
};
use crate::checkpoint::CheckpointError;
use crate::commit::{CommitError, CommitPoint};
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

/// A change of the partitions this processor owns, as the rebalance callback leaves it.
#[derive(Debug)]
enum Rebalanced {
    /// Every partition was taken away: state not yet in a manifest must be dropped, since
    /// the next owner resumes from the manifests.
    Revoked,
    /// New partitions and the state they resume from.
    Assigned(Assignment),
    /// The manifests could not be read; nothing was assigned.
    Failed(CommitError),
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
    lag: Mutex<Vec<(Partition, i64)>>,
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
                .map_or(Position::Beginning, Position::Offset);
            // The partition is in the list, so this cannot fail.
            let _ = tpl.set_partition_offset(&self.topic, partition, offset);
        }
        self.forward(consumer, &partitions);
        if let Err(e) = consumer.assign(tpl) {
            return self.push(Rebalanced::Failed(
                CheckpointError::Assign(e.to_string()).into(),
            ));
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

/// A member of a consumer group, subscribed to one topic: the source of a Kafka run.
pub struct GroupConsumer {
    /// Declared first so that its messages are destroyed before the client.
    batch: Batch,
    /// A message of a partition not forwarded to the fetch queue (librdkafka forwards every
    /// assigned one, so this is rare), copied so that the client can be replaced while it
    /// is held; `pending` while it waits for a rebalance to be handed out first.
    held: Option<OwnedMessage>,
    pending: bool,
    /// Per partition, so each record's origin is a borrow, not an allocation.
    origins: Vec<Origin>,
    bytes_read: u64,
    quiet: Quiet,
    /// When to say again what a member without partitions waits for.
    unassigned_note: Instant,
    /// Once set, the member reads its partitions up to where they end at that moment, then
    /// reports [`Ticked::Drained`]: for a run whose producer has finished.
    drain: Option<Arc<AtomicBool>>,
    /// Where the partitions ended when the drain was asked for.
    ends: Option<Vec<(Partition, Offset)>>,
    /// Declared before the client so that it is destroyed first.
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
        let now = Instant::now();
        Ok(GroupConsumer {
            batch: Batch::default(),
            held: None,
            pending: false,
            origins: Vec::new(),
            bytes_read: 0,
            quiet: Quiet::new(stall_after(settings.session_timeout), now),
            unassigned_note: now + UNASSIGNED_NOTE_EVERY,
            drain: None,
            ends: None,
            fetch,
            consumer,
            settings: settings.clone(),
            point,
        })
    }

    /// Drains (see [`Ticked::Drained`]) once `drain` is set.
    pub fn draining_when(mut self, drain: Arc<AtomicBool>) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Whether `error` is likely this member's own doing: while the broker was away its
    /// session expired, librdkafka rejoined under a new member id, and a request still
    /// carrying the old id was refused as fenced (as in librdkafka issue #3437). Another
    /// process with the same `group.instance.id` fences a member that never lost the broker.
    /// Each loss of contact excuses one fence, so two such processors cannot take turns
    /// forever: the second fence stops one of them.
    fn fenced_by_itself(&self, error: &ClientError) -> bool {
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
    pub fn ends(&self) -> Result<Vec<(Partition, Offset)>, KafkaError> {
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

    /// How many partitions the topic has, as the broker says; `None` (said in a line) when
    /// it does not answer: the group's windows then wait for another member to know.
    fn topic_partitions(&self) -> Option<i32> {
        let topic = &self.settings.topic;
        match self.consumer.fetch_metadata(Some(topic), CONNECT_TIMEOUT) {
            Ok(metadata) => metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| t.partitions().len() as i32)
                .filter(|&n| n > 0),
            Err(e) => {
                tracing::warn!("kafka: cannot learn how many partitions {topic} has: {e}");
                None
            }
        }
    }

    /// Whether a consumer that has delivered nothing for a while is stuck rather than idle:
    /// the broker answers, yet a partition it owns has records it did not read (`read` says
    /// whether the reader got to the given ends; `None` without an assignment: then the
    /// member should be settled in the group). Seen after a lone broker stalled and came
    /// back, when librdkafka may stop fetching a partition or never finish rejoining, with no
    /// error; a new client recovers.
    fn stuck(&self, read: Option<HasRead<'_>>) -> bool {
        // Unanswered: the broker is away, which librdkafka waits out by itself.
        let Ok(ends) = self.ends() else {
            return false;
        };
        match read {
            Some(read) => !read(&ends),
            None => !self.consumer.context().steady.load(Ordering::Relaxed),
        }
    }

    /// What a member without partitions waits for, in a line for the operator.
    fn waiting_for(&self) -> String {
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

    /// Replaces a fenced or stuck client with a new one that joins again; what the old one
    /// fetched is dropped, and the new assignment resumes from the commit point like any
    /// other.
    fn rejoin(&mut self) -> Result<(), KafkaError> {
        let consumer = connect(&self.settings, self.point.clone())?;
        consumer.context().reached.store(true, Ordering::Relaxed);
        let fetch = FetchQueue::new(&consumer);
        consumer.subscribe(&[&self.settings.topic])?;
        self.batch.release();
        self.held = None;
        self.pending = false;
        // Closing a client leaves the group, which a stuck one may never finish: it closes
        // on a thread of its own.
        let old = (
            std::mem::replace(&mut self.fetch, fetch),
            std::mem::replace(&mut self.consumer, consumer),
        );
        std::thread::spawn(move || drop(old));
        Ok(())
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

    fn take_event(&self) -> Option<Rebalanced> {
        self.consumer.context().take()
    }

    /// A rebalance as the pipeline sees it.
    fn rebalanced(&mut self, event: Rebalanced) -> Result<Poll<'static>, SourceError> {
        match event {
            Rebalanced::Revoked => Ok(Poll::Revoked),
            Rebalanced::Assigned(mut assignment) => {
                self.unassigned_note = Instant::now() + UNASSIGNED_NOTE_EVERY;
                assignment.recovery.topic_partitions = self.topic_partitions();
                Ok(Poll::Assigned(Box::new(assignment)))
            }
            Rebalanced::Failed(e) => Err(e.into()),
        }
    }

    /// A client that can never consume again: joins again when it fenced itself, else stops.
    fn fatal(&mut self, error: ClientError) -> Result<Poll<'static>, SourceError> {
        if !self.fenced_by_itself(&error) {
            return Err(SourceError::Consumer(error));
        }
        tracing::warn!(
            "kafka: fenced after losing the broker, by this member's own rejoin; joining again"
        );
        self.rejoin()?;
        Ok(Poll::Revoked)
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

impl Source for GroupConsumer {
    /// Waits at most `wait` for the next record. A rebalance comes out before the records
    /// fetched after it: the consumer queue, where rebalances arrive, is served only once the
    /// batch in hand is used up, and a rebalance outdates what the fetch queue still holds.
    fn poll(&mut self, wait: Duration) -> Result<Poll<'_>, SourceError> {
        if let Some(event) = self.take_event() {
            return self.rebalanced(event);
        }
        if !std::mem::take(&mut self.pending) {
            self.held = None;
            if self.batch.next_in_batch() {
                return Ok(self.batch_record());
            }
            match self
                .consumer
                .poll(Duration::ZERO)
                .map(|polled| polled.map(|m| m.detach()))
            {
                // A partition not forwarded to the fetch queue.
                Some(Ok(message)) => self.held = Some(message),
                Some(Err(e @ ClientError::MessageConsumptionFatal(_))) => return self.fatal(e),
                // Client errors reach GroupContext::error too; librdkafka retries them.
                Some(Err(_)) | None => {
                    if let Some(event) = self.take_event() {
                        return self.rebalanced(event);
                    }
                    // Whatever is queued, without waiting; else the first message to come,
                    // since a batch call waits until its batch is full.
                    if self.batch.read(&self.fetch, Duration::ZERO, BATCH)
                        || self.batch.read(&self.fetch, wait, 1)
                    {
                        return Ok(self.batch_record());
                    }
                    self.keep_brokers();
                    return match self.take_event() {
                        Some(event) => self.rebalanced(event),
                        None => Ok(Poll::Idle),
                    };
                }
            }
            if let Some(event) = self.take_event() {
                // The message waits until the processor has seen the rebalance.
                self.pending = true;
                return self.rebalanced(event);
            }
        }
        self.quiet.heard();
        let message = self.held.as_ref().expect("a message is held");
        let bytes = message.payload().unwrap_or_default();
        self.bytes_read += bytes.len() as u64;
        let origin = origin(&mut self.origins, &self.settings.topic, message.partition());
        Ok(Poll::Record(Decoded::new(Record {
            bytes,
            offset: message.offset(),
            origin,
            time: record_time(message.timestamp()),
        })))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Replaces a client that is stuck, says now and then what a member without partitions
    /// waits for, and tells when a drain is done.
    fn tick(&mut self, now: Instant, read: Option<HasRead<'_>>) -> Result<Ticked, SourceError> {
        if self.quiet.long(now) && self.stuck(read) {
            tracing::warn!(
                "kafka: nothing consumed for {:?} although the broker has records for this member; joining again with a new client",
                self.quiet.after
            );
            self.rejoin()?;
            return Ok(Ticked::Revoked);
        }
        if read.is_none() && now >= self.unassigned_note {
            tracing::info!("{}", self.waiting_for());
            self.unassigned_note = now + UNASSIGNED_NOTE_EVERY;
        }
        if self.ends.is_none()
            && self
                .drain
                .as_ref()
                .is_some_and(|d| d.load(Ordering::Relaxed))
        {
            // Unanswered (the broker is away): asked again at the next tick.
            self.ends = self.ends().ok();
        }
        Ok(match (&self.ends, read) {
            (Some(ends), Some(read)) if read(ends) => Ticked::Drained,
            _ => Ticked::Nothing,
        })
    }

    /// Tells Kafka how far the commit point goes, for lag metrics and tools; a failed commit
    /// only delays that, so it is not an error.
    fn committed(&mut self, offsets: &[(Partition, Offset)]) {
        let mut tpl = TopicPartitionList::new();
        for &(partition, next) in offsets {
            tpl.add_partition_offset(&self.settings.topic, partition, Position::Offset(next))
                .expect("an offset is a valid position");
        }
        if tpl.count() > 0 {
            let _ = self.consumer.commit(&tpl, CommitMode::Async);
        }
    }

    /// As of librdkafka's last statistics (every 5 s).
    fn lag(&self) -> Vec<(Partition, i64)> {
        let lag = self.consumer.context().lag.lock();
        lag.unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl GroupConsumer {
    /// The record at the batch's `next`, which [`Batch::next_in_batch`] found.
    fn batch_record(&mut self) -> Poll<'_> {
        self.quiet.heard();
        let message = self.batch.messages[self.batch.next];
        self.batch.next += 1;
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
        let origin = origin(&mut self.origins, &self.settings.topic, m.partition);
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: as above; librdkafka only reads the message and writes `kind`.
        let ms = unsafe { rdsys::rd_kafka_message_timestamp(message, &mut kind) };
        Poll::Record(Decoded::new(Record {
            bytes,
            offset: m.offset,
            origin,
            time: record_time(raw_timestamp(kind, ms)),
        }))
    }
}

/// The timestamp librdkafka gives a message of a batch, as its `Message` API gives it.
fn raw_timestamp(kind: rdsys::rd_kafka_timestamp_type_t, ms: i64) -> Timestamp {
    use rdsys::rd_kafka_timestamp_type_t as Kind;
    match kind {
        Kind::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(ms),
        Kind::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(ms),
        Kind::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
    }
}

/// A record's time; none where the topic keeps none (message format 0, which Kafka 4 no
/// longer writes).
fn record_time(timestamp: Timestamp) -> Option<RecordTime> {
    match timestamp {
        Timestamp::CreateTime(ms) if ms >= 0 => Some(RecordTime::CreateTime(ms)),
        Timestamp::LogAppendTime(ms) if ms >= 0 => Some(RecordTime::LogAppendTime(ms)),
        _ => None,
    }
}

/// Messages read from the fetch queue in one call, handed out in order from `next`; records
/// borrow their payloads until the next batch is read.
struct Batch {
    messages: Vec<*mut rdsys::rd_kafka_message_t>,
    next: usize,
}

// SAFETY: librdkafka messages may be used and destroyed from any thread.
unsafe impl Send for Batch {}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            messages: Vec::with_capacity(BATCH),
            next: 0,
        }
    }
}

impl Batch {
    /// Moves `next` to the next message that carries a record (the others are errors
    /// librdkafka reports and retries itself); false once the batch is used up.
    fn next_in_batch(&mut self) -> bool {
        while let Some(&message) = self.messages.get(self.next) {
            // SAFETY: messages of the batch are alive until `release`.
            if unsafe { (*message).err } == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return true;
            }
            self.next += 1;
        }
        false
    }

    /// Releases the batch in hand and reads up to `limit` messages from `fetch`, waiting at
    /// most `wait`; true if they hold a record.
    fn read(&mut self, fetch: &FetchQueue, wait: Duration, limit: usize) -> bool {
        self.release();
        let wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the fetch queue lives as long as the client whose messages this batch
        // holds; librdkafka writes at most `limit` (≤ capacity) message pointers, whose count
        // it returns.
        let read = unsafe {
            let read = rdsys::rd_kafka_consume_batch_queue(
                fetch.0,
                wait_ms,
                self.messages.as_mut_ptr(),
                limit.min(self.messages.capacity()),
            );
            self.messages.set_len(read.max(0) as usize);
            read
        };
        read > 0 && self.next_in_batch()
    }

    fn release(&mut self) {
        for message in self.messages.drain(..) {
            // SAFETY: each message of the batch is destroyed once, here.
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
        self.next = 0;
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.release();
    }
}

/// How often a group member without partitions says what it waits for.
const UNASSIGNED_NOTE_EVERY: Duration = Duration::from_secs(10);

/// How long a consumer may deliver nothing before [`GroupConsumer::stuck`] is asked: long
/// enough for the client to ride out an outage or a rebalance by itself.
fn stall_after(session_timeout: Duration) -> Duration {
    (2 * session_timeout).max(Duration::from_secs(30))
}

/// Time since the consumer last delivered a record.
struct Quiet {
    after: Duration,
    since: Instant,
    heard: bool,
}

impl Quiet {
    fn new(after: Duration, now: Instant) -> Self {
        Quiet {
            after,
            since: now,
            heard: false,
        }
    }

    /// A record came: one store, since it is called for every record.
    fn heard(&mut self) {
        self.heard = true;
    }

    /// Whether nothing came for `after` up to `now`; if so the clock starts again, so a
    /// quiet consumer is looked at once per `after`.
    fn long(&mut self, now: Instant) -> bool {
        if std::mem::take(&mut self.heard) {
            self.since = now;
            return false;
        }
        if now.duration_since(self.since) < self.after {
            return false;
        }
        self.since = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_consumer_is_looked_at_once_per_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut quiet = Quiet::new(s(30), t0);
        assert!(!quiet.long(t0 + s(29)));
        assert!(quiet.long(t0 + s(30)));
        assert!(!quiet.long(t0 + s(31)), "the clock started again");
        assert!(quiet.long(t0 + s(60)));
        quiet.heard();
        assert!(!quiet.long(t0 + s(95)), "a record came since the last look");
        assert!(!quiet.long(t0 + s(124)));
        assert!(quiet.long(t0 + s(125)));
    }

    #[test]
    fn a_stall_is_suspected_only_after_the_session_could_have_recovered() {
        assert_eq!(stall_after(Duration::from_secs(6)), Duration::from_secs(30));
        assert_eq!(
            stall_after(Duration::from_secs(45)),
            Duration::from_secs(90)
        );
    }
}
