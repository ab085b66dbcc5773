//! `process`: a JSONL file, stdin, or a Kafka consumer group → the three datasets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Result;

use super::group::consume_group;
use super::{EXIT_INTERRUPTED, Lake, stop_flag};
use crate::config::{MetricsArgs, PipelineSettings, ProcessArgs};
use crate::pipeline::{Ending, drive, router};
use crate::sink::{Tags, naming};
use crate::source::kafka::ConsumerSettings;
use crate::source::open_input;
use crate::tools::observe::{Progress, expose};
use crate::tools::report;

pub struct ProcessPlan {
    input: Input,
    destination: Lake,
    pipeline: PipelineSettings,
    metrics: MetricsArgs,
}

enum Input {
    /// A JSONL file, or stdin (`-`).
    File(PathBuf),
    /// A consumer group; with `stop_at_end`, until every partition is read to where it
    /// ended at start-up.
    Kafka {
        settings: Box<ConsumerSettings>,
        stop_at_end: bool,
    },
}

impl ProcessPlan {
    pub fn new(args: ProcessArgs) -> Result<Self> {
        let pipeline = args.pipeline.settings()?;
        let destination = Lake::for_writing(args.storage, &args.s3, &pipeline)?;
        let input = match (args.input, &args.bootstrap_servers) {
            (Some(input), _) => Input::File(input),
            (None, Some(servers)) => Input::Kafka {
                settings: Box::new(args.kafka.settings(servers)?),
                stop_at_end: args.stop_at_end,
            },
            (None, None) => unreachable!("clap requires --input or --bootstrap-servers"),
        };
        Ok(ProcessPlan {
            input,
            destination,
            pipeline,
            metrics: args.metrics,
        })
    }

    pub fn summary(&self) -> String {
        let from = match &self.input {
            Input::File(path) => path.display().to_string(),
            Input::Kafka { settings, .. } => format!(
                "{} at {} ({}) as group {}",
                settings.topic,
                settings.cluster.servers,
                settings.cluster.security.describe(),
                settings.group
            ),
        };
        format!(
            "process {from} into {}",
            self.destination.describe(&self.pipeline)
        )
    }

    pub fn execute(self) -> Result<ExitCode> {
        match &self.input {
            Input::File(path) => self.process_file(path),
            Input::Kafka {
                settings,
                stop_at_end,
            } => self.process_kafka(settings, *stop_at_end),
        }
    }

    /// Every window is final at the end of the input, and every file is published as soon
    /// as it is finished.
    fn process_file(&self, input: &Path) -> Result<ExitCode> {
        let label = match input.file_stem() {
            Some(stem) if input != Path::new("-") => stem.to_string_lossy().into_owned(),
            _ => "stdin".into(),
        };
        let mut source = open_input(input, self.pipeline.workers.clone())?;
        let exposed = expose(&self.metrics, None, true, false)?;
        let storage = self.destination.open(
            &self.pipeline.buckets.datasets(),
            exposed.storage_observer(),
        )?;
        let tags = Tags::Fixed(naming::source_tag(&label));
        let stop = stop_flag()?;
        exposed.health.set_connected(true);
        let started = Instant::now();
        // A regular file's size, for how far through it the run is; stdin has none.
        let size = std::fs::metadata(input)
            .ok()
            .filter(|m| m.is_file() && input != Path::new("-"))
            .map(|m| m.len());
        let progress = Progress::new("processing", exposed.observed()).of_input(size);
        let driven = drive(
            source.as_mut(),
            &mut |_, _| router(&self.pipeline, storage.clone(), tags.clone()),
            &mut self
                .destination
                .immediate(&self.pipeline, storage.clone())?,
            &stop,
            progress.every,
            &mut |router, source| progress.show(router, source.bytes_read()),
        )?;
        let Some(router) = &driven.router else {
            return Ok(ExitCode::SUCCESS);
        };
        progress.done(router);
        print!(
            "{}",
            report::summary(router.stats(), started.elapsed(), Some(source.bytes_read()))
        );
        println!("output: {}", self.destination.describe(&self.pipeline));
        if driven.ending == Ending::Stopped {
            tracing::warn!(
                "interrupted after {} records; everything read so far is written",
                router.stats().records
            );
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// A member of the consumer group until stopped. Exactly once through checkpoints
    /// (docs/EXACTLY_ONCE.md).
    fn process_kafka(&self, settings: &ConsumerSettings, stop_at_end: bool) -> Result<ExitCode> {
        let stop = stop_flag()?;
        let drain = Arc::new(AtomicBool::new(stop_at_end));
        let started = Instant::now();
        let exposed = expose(&self.metrics, None, true, false)?;
        let storage = self.destination.open(
            &self.pipeline.buckets.with_checkpoints(),
            exposed.storage_observer(),
        )?;
        let committer = self
            .destination
            .committer(&self.pipeline, storage.clone(), settings)?;
        let router = consume_group(
            settings,
            &self.pipeline,
            storage,
            committer,
            &stop,
            drain,
            exposed.observed(),
        )?;
        if let Some(router) = router {
            print!(
                "{}",
                report::summary(router.stats(), started.elapsed(), None)
            );
        }
        println!("output: {}", self.destination.describe(&self.pipeline));
        Ok(ExitCode::SUCCESS)
    }
}
