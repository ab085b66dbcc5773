//! Each subcommand as a plan: its arguments validated once into settings (what
//! `--check-config` reports and what the run uses, nothing else), then carried out by wiring
//! a source, the pipeline and its sinks, or a tool.

mod generate;
mod group;
mod lake;
mod limits;
mod process;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};

use crate::commit::{
    Commit, CommitPoint, Compactor, Manifests, Merger, TableLog, TableRoot, Tables,
};
use crate::config::{BucketsCommand, Command, ConfigError, PipelineSettings, S3Args, TableFormat};
use crate::kafka::{self, Cluster, TopicState};
use crate::sink::Tags;
use crate::source::kafka::ConsumerSettings;
use crate::storage::{
    Buckets, LocalStorage, Location, RequestObserver, S3Settings, S3Storage, Storage,
};
use group::Committer;

/// Exit code after an interrupt, as shells report for SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// A subcommand, validated.
pub enum Plan {
    Run(run::RunPlan),
    Generate(generate::GeneratePlan),
    Process(process::ProcessPlan),
    Buckets(lake::BucketsPlan),
    Inspect(lake::InspectPlan),
    Vacuum(lake::VacuumPlan),
    Compact(lake::CompactPlan),
    Bench(crate::config::BenchArgs),
    ParseOnly(limits::ParseOnlyPlan),
    ConsumeOnly(limits::ConsumeOnlyPlan),
}

impl Plan {
    /// Every setting that can be wrong fails here, before anything is opened or connected.
    pub fn new(command: Command) -> Result<Self> {
        Ok(match command {
            Command::Run(args) => Plan::Run(run::RunPlan::new(args)?),
            Command::Generate(args) => Plan::Generate(generate::GeneratePlan::new(args)?),
            Command::Process(args) => Plan::Process(process::ProcessPlan::new(args)?),
            Command::Buckets(BucketsCommand::Create(args)) => {
                Plan::Buckets(lake::BucketsPlan::new(args)?)
            }
            Command::Inspect(args) => Plan::Inspect(lake::InspectPlan::new(args)?),
            Command::Vacuum(args) => Plan::Vacuum(lake::VacuumPlan::new(args)?),
            Command::Compact(args) => Plan::Compact(lake::CompactPlan::new(args)?),
            Command::Bench(args) => Plan::Bench(args),
            Command::ParseOnly(args) => Plan::ParseOnly(limits::ParseOnlyPlan { args }),
            Command::ConsumeOnly(args) => Plan::ConsumeOnly(limits::ConsumeOnlyPlan::new(args)?),
        })
    }

    /// What the plan would do, for `--check-config`.
    pub fn summary(&self) -> String {
        match self {
            Plan::Run(plan) => plan.summary(),
            Plan::Generate(plan) => plan.summary(),
            Plan::Process(plan) => plan.summary(),
            Plan::Buckets(plan) => plan.summary(),
            Plan::Inspect(plan) => plan.summary(),
            Plan::Vacuum(plan) => plan.summary(),
            Plan::Compact(plan) => plan.summary(),
            Plan::Bench(_) | Plan::ParseOnly(_) | Plan::ConsumeOnly(_) => "benchmark".into(),
        }
    }

    pub fn execute(self) -> Result<ExitCode> {
        match self {
            Plan::Run(plan) => plan.execute(),
            Plan::Generate(plan) => plan.execute(),
            Plan::Process(plan) => plan.execute(),
            Plan::Buckets(plan) => plan.execute(),
            Plan::Inspect(plan) => plan.execute(),
            Plan::Vacuum(plan) => plan.execute(),
            Plan::Compact(plan) => plan.execute(),
            Plan::Bench(args) => crate::tools::bench::run(&args).map(|()| ExitCode::SUCCESS),
            Plan::ParseOnly(plan) => plan.execute(),
            Plan::ConsumeOnly(plan) => plan.execute(),
        }
    }
}

/// A flag set by the first SIGINT or SIGTERM; a second one ends the process at once.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install signal handlers")?;
    }
    Ok(stop)
}

/// S3 publishes a file by copying its staged object, and one copy moves at most 5 GiB; a
/// file can outgrow `--file-max-bytes` by a row group.
const S3_MAX_FILE_BYTES: u64 = 4 << 30;

/// Where the datasets are, validated: a folder, or S3 with its settings.
#[derive(Clone)]
enum Lake {
    Local(PathBuf),
    S3(S3Settings),
}

impl Lake {
    /// The S3 settings are read only for S3.
    fn new(location: Location, s3: &S3Args) -> Result<Self, ConfigError> {
        match location {
            Location::Local(root) => Ok(Lake::Local(root)),
            Location::S3 => Ok(Lake::S3(s3.settings()?)),
        }
    }

    /// A lake the pipeline writes to: on S3 a file must also stay within what S3 publishes
    /// in one copy.
    fn for_writing(
        location: Location,
        s3: &S3Args,
        pipeline: &PipelineSettings,
    ) -> Result<Self, ConfigError> {
        if location == Location::S3 && pipeline.file_max_bytes > S3_MAX_FILE_BYTES {
            return Err(ConfigError::Invalid {
                setting: "FILE_MAX_BYTES",
                problem: format!(
                    "{} is above {S3_MAX_FILE_BYTES}, the most S3 publishes in one copy",
                    pipeline.file_max_bytes
                ),
            });
        }
        Self::new(location, s3)
    }

    /// Opens the lake (creating a folder, or checking every bucket in `used` answers), so a
    /// bad location fails before any input is read.
    fn open(
        &self,
        used: &[&str],
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Arc<dyn Storage>> {
        Ok(match self {
            Lake::Local(root) => Arc::new(LocalStorage::open(root)?.observed_by(observer)),
            Lake::S3(settings) => Arc::new(S3Storage::open(settings, used, observer)?),
        })
    }

    /// Where the datasets went, for the last line of a run.
    fn describe(&self, pipeline: &PipelineSettings) -> String {
        let b = &pipeline.buckets;
        match self {
            Lake::S3(_) => b.datasets().map(|name| format!("s3://{name}")).join(", "),
            Lake::Local(_) => self.to_string(),
        }
    }
}

impl std::fmt::Display for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lake::Local(root) => write!(f, "{}", root.display()),
            Lake::S3(_) => f.write_str("S3"),
        }
    }
}

impl Lake {
    /// The Delta tables the datasets are, for the delta format (created when missing).
    fn tables(
        &self,
        pipeline: &PipelineSettings,
        storage: &dyn Storage,
    ) -> Result<Option<Box<Tables>>> {
        match pipeline.table_format {
            TableFormat::Parquet => Ok(None),
            TableFormat::Delta => Ok(Some(Box::new(
                self.open_tables(&pipeline.buckets, storage)?,
            ))),
        }
    }

    /// The Delta tables of `buckets` here, created empty where missing; on S3 they wait out
    /// S3 failing with `storage`'s requests.
    fn open_tables(&self, buckets: &Buckets, storage: &dyn Storage) -> Result<Tables> {
        Ok(Tables::open(self.table_root(storage), buckets)?)
    }

    /// Where the buckets' tables are.
    fn table_root(&self, storage: &dyn Storage) -> TableRoot<'_> {
        match self {
            Lake::Local(root) => TableRoot::Folder(root),
            Lake::S3(settings) => TableRoot::S3(settings, storage.outage().unwrap_or_default()),
        }
    }

    /// The commit of a bounded input: files, or the tables' commits, appear as they finish.
    fn immediate(&self, pipeline: &PipelineSettings, storage: Arc<dyn Storage>) -> Result<Commit> {
        let tables = self.tables(pipeline, &*storage)?;
        Ok(Commit::immediate(tables).compacted_by(self.compactor(pipeline, storage)?))
    }

    /// How a member of the consumer group commits: its checkpoints made durable in manifests
    /// beside Parquet folders, or in the raw Delta table's log.
    fn committer(
        &self,
        pipeline: &PipelineSettings,
        storage: Arc<dyn Storage>,
        settings: &ConsumerSettings,
    ) -> Result<Committer> {
        let checkpoints = &pipeline.buckets.checkpoints;
        let (group, topic) = (&settings.group, &settings.topic);
        let merger = Merger::new(
            storage.clone(),
            checkpoints,
            group,
            topic,
            pipeline.window,
            pipeline.sink_config(Tags::Fixed(String::new())),
        );
        let point: Arc<dyn CommitPoint> = match self.tables(pipeline, &*storage)? {
            None => Arc::new(
                Manifests::new(storage.clone(), checkpoints, group, topic).merged_by(merger),
            ),
            Some(tables) => Arc::new(
                TableLog::new(*tables, storage.clone(), checkpoints, group, topic)
                    .merged_by(merger),
            ),
        };
        let compactor = self.compactor(pipeline, storage)?;
        Ok(Committer { point, compactor })
    }

    /// Compaction beside the run, with tables of its own, when the tables are compacted.
    fn compactor(
        &self,
        pipeline: &PipelineSettings,
        storage: Arc<dyn Storage>,
    ) -> Result<Option<Compactor>> {
        let Some(settings) = pipeline.compaction else {
            return Ok(None);
        };
        let (lake, buckets, store) = (self.clone(), pipeline.buckets.clone(), storage.clone());
        let open = move || Tables::open(lake.table_root(&*store), &buckets);
        Ok(Some(Compactor::start(
            open,
            storage,
            settings,
            pipeline.compression,
        )?))
    }
}

/// Creates the topic if it is missing, and says which it was.
fn ensure_topic(cluster: &Cluster, topic: &str, partitions: i32, stop: &AtomicBool) -> Result<()> {
    match kafka::ensure_topic(cluster, topic, partitions, stop)? {
        TopicState::Created { partitions } => {
            tracing::info!("created topic {topic} with {partitions} partitions")
        }
        TopicState::Existed { partitions } => {
            tracing::info!("producing to topic {topic} ({partitions} partitions)")
        }
    }
    Ok(())
}
