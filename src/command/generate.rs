//! `generate`: pageview events as JSON lines to a file, stdout, or a Kafka topic.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{ensure_topic, stop_flag};
use crate::config::{GENERATE_DEFAULTS, GenerateArgs, MetricsArgs};
use crate::generate::{Generator, GeneratorConfig};
use crate::kafka::{self, ProducerSettings};
use crate::tools::observe::expose;
use crate::tools::report;

pub struct GeneratePlan {
    config: GeneratorConfig,
    to: Output,
    metrics: MetricsArgs,
}

enum Output {
    /// A file, or stdout (`-`).
    File(PathBuf),
    /// A topic, created with this many partitions if missing.
    Kafka {
        settings: Box<ProducerSettings>,
        partitions: i32,
    },
}

impl GeneratePlan {
    pub fn new(args: GenerateArgs) -> Result<Self> {
        let config = args.generator.settings(&GENERATE_DEFAULTS)?;
        let to = match (args.output, &args.kafka.bootstrap_servers) {
            (Some(path), _) => Output::File(path),
            (None, Some(servers)) => Output::Kafka {
                settings: Box::new(ProducerSettings {
                    cluster: args.kafka.security.cluster(servers)?,
                    topic: args.kafka.topic.clone(),
                    key: args.kafka.key,
                }),
                partitions: args.kafka.partitions,
            },
            (None, None) => unreachable!("clap requires --output or --bootstrap-servers"),
        };
        Ok(GeneratePlan {
            config,
            to,
            metrics: args.metrics,
        })
    }

    pub fn summary(&self) -> String {
        match &self.to {
            Output::File(path) => format!("generate to {}", path.display()),
            Output::Kafka { settings, .. } => format!(
                "generate to {} at {} ({})",
                settings.topic,
                settings.cluster.servers,
                settings.cluster.security.describe()
            ),
        }
    }

    pub fn execute(self) -> Result<ExitCode> {
        let stop = stop_flag()?;
        let config = self.config;
        let announce = |to: &str| {
            if config.simulated_start_ms.is_none() {
                tracing::info!("{}", report::generating(config.rate, config.events, to));
            }
        };
        match self.to {
            Output::File(path) if path == Path::new("-") => {
                announce("stdout");
                let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
                match Generator::new(config).write_to(&mut out, &stop) {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        return Ok(ExitCode::SUCCESS);
                    }
                    other => other.context("cannot write to stdout")?,
                }
            }
            Output::File(path) => {
                let file = File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                announce(&path.display().to_string());
                let mut out = BufWriter::with_capacity(1 << 20, file);
                let mut generator = Generator::new(config);
                generator
                    .write_to(&mut out, &stop)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!("wrote {} events to {}", generator.made(), path.display());
            }
            Output::Kafka {
                settings,
                partitions,
            } => {
                let servers = &settings.cluster.servers;
                tracing::info!(
                    "connecting to Kafka at {servers} ({})",
                    settings.cluster.security.describe()
                );
                ensure_topic(&settings.cluster, &settings.topic, partitions, &stop)?;
                let exposed = expose(&self.metrics, None, false, true)?;
                exposed.health.set_connected(true);
                announce(&format!("{} at {servers}", settings.topic));
                let mut generator = Generator::new(config);
                let produced = kafka::produce(&mut generator, &settings, &stop, exposed.generator)?;
                tracing::info!(
                    "produced {} events to {} at {servers}",
                    produced.delivered,
                    settings.topic
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
