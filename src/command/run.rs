//! `run`: the generator and the processor in one process, into local folders: in-process
//! (the embedded default) or through a Kafka broker (`--kafka`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;

use super::group::consume_group;
use super::{Lake, ensure_topic, stop_flag};
use crate::config::{MetricsArgs, PipelineSettings, RUN_DEFAULTS, RunArgs};
use crate::generate::{Generator, GeneratorConfig};
use crate::kafka::{self, KeyChoice, ProducerSettings};
use crate::pipeline::{drive, router};
use crate::sink::{Tags, naming};
use crate::source::StreamSource;
use crate::source::kafka::ConsumerSettings;
use crate::storage::{LocalStorage, Storage};
use crate::tools::observe::{Exposed, Progress, RUN_METRICS_PORT, expose};
use crate::tools::report;

/// Partitions of the topic `run --kafka` creates, as the original's set-up does.
const RUN_PARTITIONS: i32 = 3;

pub struct RunPlan {
    generator: GeneratorConfig,
    pipeline: PipelineSettings,
    data_dir: PathBuf,
    /// Through a broker, consuming as this group member.
    kafka: Option<Box<ConsumerSettings>>,
    metrics: MetricsArgs,
}

impl RunPlan {
    pub fn new(args: RunArgs) -> Result<Self> {
        let generator = args.generator.settings(&RUN_DEFAULTS)?;
        let pipeline = args.pipeline.settings()?;
        let kafka = match &args.kafka {
            Some(servers) => Some(Box::new(args.consumer.settings(servers)?)),
            None => None,
        };
        Ok(RunPlan {
            generator,
            pipeline,
            data_dir: args.data_dir,
            kafka,
            metrics: args.metrics,
        })
    }

    pub fn summary(&self) -> String {
        format!("run into {}", self.data_dir.display())
    }

    pub fn execute(self) -> Result<ExitCode> {
        match &self.kafka {
            Some(consumer) => self.run_kafka(consumer),
            None => self.run_embedded(),
        }
    }

    /// The generator writes into an in-process stream on a thread; the processor stops once
    /// the generator has and the stream it made has drained.
    fn run_embedded(&self) -> Result<ExitCode> {
        let label = format!("run{}", crate::generate::now_ms());
        let (exposed, storage) = self.open(false)?;
        let tags = Tags::Fixed(naming::source_tag(&label));
        let stop = stop_flag()?;
        exposed.health.set_connected(true);
        self.introduce("");
        let (chunks, mut source) =
            StreamSource::embedded("pageview-events", self.pipeline.workers.clone());
        let generator_stop = stop.clone();
        let config = self.generator.clone();
        let generator = std::thread::spawn(move || {
            Generator::new(config).send_to(&chunks, &generator_stop);
        });
        let started = Instant::now();
        let progress = Progress::new("running", exposed.observed());
        let driven = drive(
            &mut source,
            &mut |_, _| router(&self.pipeline, storage.clone(), tags.clone()),
            &mut self.lake().immediate(&self.pipeline, storage.clone())?,
            &AtomicBool::new(false),
            progress.every,
            &mut |router, _| progress.show(router, 0),
        )?;
        if let Some(router) = &driven.router {
            progress.done(router);
        }
        generator
            .join()
            .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
        if let Some(router) = &driven.router {
            print!(
                "{}",
                report::summary(router.stats(), started.elapsed(), None)
            );
        }
        println!("output: {}", self.data_dir.display());
        Ok(ExitCode::SUCCESS)
    }

    /// The generator produces to the topic on a thread while this one consumes it as
    /// `process` does. With `--events`, it stops once everything produced has been read.
    fn run_kafka(&self, consumer: &ConsumerSettings) -> Result<ExitCode> {
        let topic = &consumer.topic;
        let (exposed, storage) = self.open(true)?;
        let stop = stop_flag()?;
        ensure_topic(&consumer.cluster, topic, RUN_PARTITIONS, &stop)?;
        let drain = Arc::new(AtomicBool::new(false));
        self.introduce(&format!(" through {topic} at {}", consumer.cluster.servers));
        let settings = ProducerSettings {
            cluster: consumer.cluster.clone(),
            topic: topic.clone(),
            key: KeyChoice::None,
        };
        let generator = {
            let (stop, drain) = (stop.clone(), drain.clone());
            let metrics = exposed.generator.clone();
            let config = self.generator.clone();
            std::thread::spawn(move || {
                let produced =
                    kafka::produce(&mut Generator::new(config), &settings, &stop, metrics);
                drain.store(true, Ordering::Relaxed);
                produced
            })
        };
        let started = Instant::now();
        let committer = self
            .lake()
            .committer(&self.pipeline, storage.clone(), consumer)?;
        let consumed = consume_group(
            consumer,
            &self.pipeline,
            storage,
            committer,
            &stop,
            drain,
            exposed.observed(),
        );
        if consumed.is_err() {
            // The generator stops too when the processor cannot go on.
            stop.store(true, Ordering::Relaxed);
        }
        let produced = generator
            .join()
            .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
        let router = consumed?;
        let produced = produced?;
        if let Some(router) = router {
            print!(
                "{}",
                report::summary(router.stats(), started.elapsed(), None)
            );
        }
        println!(
            "produced {} events to {topic}; output: {}",
            produced.delivered,
            self.data_dir.display()
        );
        Ok(ExitCode::SUCCESS)
    }

    /// The endpoints (the generator's metrics too when it produces to Kafka) and the data
    /// folder.
    fn lake(&self) -> Lake {
        Lake::Local(self.data_dir.clone())
    }

    fn open(&self, through_kafka: bool) -> Result<(Exposed, Arc<dyn Storage>)> {
        let exposed = expose(&self.metrics, Some(RUN_METRICS_PORT), true, through_kafka)?;
        let storage = LocalStorage::open(&self.data_dir)?.observed_by(exposed.storage_observer());
        Ok((exposed, Arc::new(storage)))
    }

    /// What `run` is about to do, in two or three lines.
    fn introduce(&self, through: &str) {
        let config = &self.generator;
        let pipeline = &self.pipeline;
        println!(
            "pageview run: generating {} events/s{}{through} into {} (Ctrl-C stops, flushing everything)",
            config.rate,
            if config.simulated_start_ms.is_some() {
                " of simulated time"
            } else {
                ""
            },
            self.data_dir.display()
        );
        println!(
            "windows of {} s are written {} ms after they end; files publish every {} ms or {} MiB",
            pipeline.window.size_ms() / 1000,
            pipeline.watermark_delay_ms,
            pipeline.file_max_age.as_millis(),
            pipeline.file_max_bytes >> 20
        );
        if config.simulated_start_ms.is_none() {
            println!("(add --simulated-time to see hundreds of windows in seconds)");
        }
    }
}
