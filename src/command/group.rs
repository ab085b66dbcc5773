//! A member of a Kafka consumer group, wired: its commit point, its routers, its progress.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::commit::{Checkpointed, Commit, CommitPoint, Compactor};
use crate::config::PipelineSettings;
use crate::config::TableFormat;
use crate::pipeline::{PipelineError, drive, resumed_router};
use crate::route::Router;
use crate::sink::{Sinks, Tags};
use crate::source::Assignment;
use crate::source::kafka::{ConsumerSettings, GroupConsumer};
use crate::storage::Storage;
use crate::tools::observe::{Observed, Progress};

/// How a group member commits, and compacts its tables.
pub(super) struct Committer {
    pub point: Arc<dyn CommitPoint>,
    pub compactor: Option<Compactor>,
}

/// Joins the group and processes what it is assigned into `storage`, committing through
/// `committer`, until `stop`, or, once `drain` is set, until it has read up to where its
/// partitions ended then; the router of the last assignment, for its counters.
pub(super) fn consume_group(
    settings: &ConsumerSettings,
    pipeline: &PipelineSettings,
    storage: Arc<dyn Storage>,
    committer: Committer,
    stop: &AtomicBool,
    drain: Arc<AtomicBool>,
    observed: Observed,
) -> Result<Option<Router>, PipelineError> {
    let cluster = &settings.cluster;
    tracing::info!(
        "connecting to Kafka at {} ({}) for {}",
        cluster.servers,
        cluster.security.describe(),
        settings.topic
    );
    let Committer { point, compactor } = committer;
    let mut group = GroupConsumer::join(settings, point.clone(), stop)?.draining_when(drain);
    // A group member runs for good: readers' globs over the DLQ folder must match before its
    // first dead letter, not only after it stops (a table is readable from its creation).
    // Only once joined: a member that never reaches its cluster writes nothing.
    if pipeline.table_format == TableFormat::Parquet {
        Sinks::new(
            storage.clone(),
            &pipeline.sink_config(Tags::Fixed("dlq".into())),
        )
        .ensure_dlq_file()?;
    }
    let member = settings.member_name();
    tracing::info!(
        "consuming {} at {} as {member} in group {}; checkpoints every {} ms",
        settings.topic,
        cluster.servers,
        settings.group,
        settings.checkpoint_interval.as_millis()
    );
    let partials = point.partials().map(String::from);
    let progress = Progress::new("processing", observed);
    let mut start = |assignment: &Assignment, before: Option<Router>| {
        progress.observed.health.set_connected(true);
        tracing::info!(
            "assigned partitions {:?} of {}",
            assignment.partitions,
            settings.topic
        );
        let mut router = resumed_router(
            pipeline,
            storage.clone(),
            &settings.topic,
            partials.as_deref(),
            assignment,
        );
        if let Some(before) = before {
            router.continue_stats(before);
        }
        router
    };
    let mut checkpointed = Checkpointed::new(
        point,
        &member,
        &settings.topic,
        settings.checkpoint_interval,
    );
    if let Some(metrics) = progress.observed.metrics.clone() {
        let told = metrics.clone();
        checkpointed = checkpointed
            .timed_by(move |took| metrics.checkpointed(took))
            .merges_told_to(move |pass| told.merged(pass));
    }
    let driven = drive(
        &mut group,
        &mut start,
        &mut Commit::checkpointed(checkpointed).compacted_by(compactor),
        stop,
        progress.every,
        &mut |router, source| {
            progress.observed.observe_lag(&source.lag());
            progress.show(router, 0)
        },
    )?;
    if let Some(router) = &driven.router {
        progress.done(router);
    }
    group.leave();
    Ok(driven.router)
}
