//! Flags and environment variables (SPEC.md 5) → validated settings the pipeline takes.
//!
//! clap parses and range-checks each value; `settings()` methods then combine them into the
//! types the pipeline uses, so nothing downstream re-checks configuration.

use std::num::NonZero;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use parquet::basic::{Compression, ZstdLevel};

use crate::commit::CompactionSettings;
use crate::dataset::Dataset;
use crate::future::FutureBound;
use crate::generate::{GeneratorConfig, now_ms, simulated_start};
use crate::kafka::KeyChoice;
use crate::kafka::security::{
    Cluster, Mechanism, Protocol, RESERVED, Reserved, Sasl, Secret, Security, Tls,
};
use crate::logging::LogFormat;
use crate::sink::{SinkConfig, Tags};
use crate::source::kafka::ConsumerSettings;
use crate::storage::{Buckets, Location, S3Settings};
use crate::window::{WindowSpec, Windows};
use crate::workers::{Workers, available_cores};

#[derive(Debug, Parser)]
#[command(
    name = "pageview",
    version,
    about = "Real-time pageview pipeline: validate events, count them per postcode in 1-minute \
             windows, and write raw, aggregated and dead-letter Parquet datasets."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Check the command's flags and environment variables as a start would, say what it
    /// would use, and exit without connecting to anything (for deployment files and CI).
    #[arg(long, global = true)]
    pub check_config: bool,
    /// Log lines as text (`pageview: …`) or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Which log lines: error, warn, info, debug, trace, or a filter such as
    /// `pageview=debug,rdkafka=info`.
    #[arg(long, env = "LOG_LEVEL", global = true, default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generator and processor in one process, writing to local folders (the embedded default).
    Run(RunArgs),
    /// Write generated pageview events as JSON lines to a file or stdout.
    Generate(GenerateArgs),
    /// Process a JSONL file (or stdin) into the three datasets, closing every window at the end.
    Process(ProcessArgs),
    /// Create the buckets on S3 with their lifecycle rules; running it again changes nothing.
    #[command(subcommand)]
    Buckets(BucketsCommand),
    /// Time `process` on generated files of several sizes against a parse-only loop.
    Bench(BenchArgs),
    /// Summarise what the pipeline wrote: files, rows and bytes per dataset, the latest
    /// windows with their counts per postcode, and dead letters by reason with samples.
    Inspect(InspectArgs),
    /// Delete the files of the Delta tables in a folder that no version younger than the
    /// retention needs: files a commit removed, and files a crashed run left in no commit.
    Vacuum(VacuumArgs),
    /// Rewrite the small files of each Delta table's partitions into large ones, in one
    /// commit per table that readers see as no change (the processor makes files as data
    /// arrives; this folds them).
    Compact(CompactArgs),
    /// Read a JSONL file and only parse each line's JSON: the limit `bench` compares with.
    #[command(hide = true)]
    ParseOnly(ParseOnlyArgs),
    /// Join the group and read every partition to its end, touching each record and nothing
    /// else: the limit `bench --kafka` compares `process` with.
    #[command(hide = true)]
    ConsumeOnly(ConsumeOnlyArgs),
}

/// Where `/metrics`, `/healthz` and `/readyz` are served.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Port of the HTTP endpoints; 0 picks a free one [default: none for generate and
    /// process; 9464 for run, or a free one when that is taken].
    #[arg(long, env = "METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Address the endpoints listen on.
    #[arg(long, env = "METRICS_HOST", default_value = "0.0.0.0")]
    pub metrics_host: String,
}

#[derive(Debug, Subcommand)]
pub enum BucketsCommand {
    /// Create the raw, aggregated, DLQ and checkpoint buckets (versioned, encrypted, public
    /// access blocked), raw and aggregated data files moving to Glacier after 30 days and
    /// dead letters expiring after `--dlq-retention-days` (Parquet folders: Delta tables
    /// expire their dead letters through their log).
    Create(BucketsCreateArgs),
}

#[derive(Debug, Args)]
pub struct BucketsCreateArgs {
    #[command(flatten)]
    pub buckets: BucketArgs,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub dlq: DlqRetentionArgs,
    /// The layout the buckets will hold: with `delta` no rule deletes dead letters, since S3
    /// deleting a file a Delta table's log names breaks every read of the table (the
    /// processor and `vacuum` expire them through the log).
    #[arg(long, env = "TABLE_FORMAT", value_enum, default_value_t = TableFormat::Parquet)]
    pub table_format: TableFormat,
}

/// Where a lake's datasets are, for the commands that work on what is already written.
#[derive(Debug, Args)]
pub struct LakeArgs {
    /// Where the datasets are: a folder (one subfolder per bucket, as `run --data-dir` and
    /// `process --storage DIR` write) or `s3`.
    #[arg(long, env = "STORAGE", default_value = "pageview-data", value_parser = Location::parse)]
    pub storage: Location,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub buckets: BucketArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// How many of the latest windows to show.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub windows: u32,
    /// Show only the window holding this time, with every postcode: `2026-11-30T05:42:00Z`,
    /// `2026-11-30 05:42` (UTC), or ms since the epoch.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub window: Option<i64>,
    /// Sample payloads shown per dead-letter reason.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub samples: u32,
    /// The consumer group whose progress to show, as its processors were given it.
    #[arg(
        long,
        env = "KAFKA_CONSUMER_GROUP",
        default_value = "pageview-processor"
    )]
    pub group: String,
    /// The topic that group reads.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "pageview-events")]
    pub topic: String,
}

/// How long dead letters are kept, in either layout.
#[derive(Debug, Args)]
pub struct DlqRetentionArgs {
    /// Days a dead letter is kept. Parquet folders: S3 deletes the files this old (a bucket
    /// rule of `buckets create`). Delta tables: the processor's compaction passes and `vacuum`
    /// remove files added this long ago from the DLQ table, and vacuum deletes them once no
    /// version of its retention needs them.
    #[arg(long, env = "DLQ_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub dlq_retention_days: u32,
}

impl DlqRetentionArgs {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.dlq_retention_days) * 86_400)
    }
}

#[derive(Debug, Args)]
pub struct VacuumArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub dlq: DlqRetentionArgs,
    /// Files are kept this many days after no version needs them, so that readers of an
    /// older version (and a run still writing) are not cut short; 7 as Delta's default.
    #[arg(long, env = "VACUUM_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retention_days: u32,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Parquet compression codec of the rewritten files.
    #[arg(long, env = "PARQUET_COMPRESSION", value_enum, default_value_t = Codec::Snappy)]
    pub compression: Codec,
}

/// How large compaction makes a Delta table's files.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Small files of a partition are rewritten into files of up to this size.
    #[arg(long, env = "TARGET_FILE_MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub target_file_mib: u64,
}

impl TargetArgs {
    pub fn bytes(&self) -> u64 {
        self.target_file_mib << 20
    }
}

impl CompactArgs {
    pub fn compression(&self) -> Compression {
        self.compression.compression()
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Folder the three datasets are written under, one subfolder per bucket name.
    #[arg(long, env = "DATA_DIR", default_value = "pageview-data")]
    pub data_dir: PathBuf,
    /// Run through a Kafka broker instead of in-process: the generator produces to the topic
    /// (created with 3 partitions if missing) and the processor consumes it as a group
    /// member, exactly as `generate` and `process` do.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// File to write JSON lines to; `-` writes to stdout. Without it, events go to Kafka.
    #[arg(long, short, required_unless_present = "bootstrap_servers")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: ProducerArgs,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Where generated events go when they go to Kafka.
#[derive(Debug, Args)]
pub struct ProducerArgs {
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// Topic the events are produced to; created if missing.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "pageview-events")]
    pub topic: String,
    /// Partitions of the topic when it has to be created.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Message key.
    #[arg(long, value_enum, default_value_t = KeyChoice::None)]
    pub key: KeyChoice,
    #[command(flatten)]
    pub security: KafkaSecurityArgs,
}

/// How clients authenticate to Kafka and encrypt what they send: TLS, SASL, or both, as
/// managed clusters (MSK, Confluent Cloud, Aiven) need. An empty variable is unset, as
/// `NAME: ${NAME:-}` in a compose file passes it.
#[derive(Args)]
pub struct KafkaSecurityArgs {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [default: SASL_SSL when a SASL mechanism
    /// is set, PLAINTEXT otherwise].
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL")]
    pub kafka_security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER (a token from librdkafka's
    /// `sasl.oauthbearer.*` options) or AWS_MSK_IAM (tokens signed with the AWS credentials
    /// of the environment, for AWS_REGION).
    #[arg(long, env = "KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL username (PLAIN and SCRAM; Confluent Cloud's API key).
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password (Confluent Cloud's API secret); prefer the file for secrets.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
    /// A file holding the SASL password (a mounted Kubernetes secret); one trailing newline
    /// is not part of it.
    #[arg(long, env = "KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<String>,
    /// PEM file of the CA certificates the broker's certificate must chain to [default: the
    /// system's]. The broker's host name is verified against its certificate.
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<String>,
    /// PEM file of this client's certificate, for brokers that authenticate clients by TLS
    /// (with --kafka-ssl-key-location).
    #[arg(long, env = "KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub kafka_ssl_certificate_location: Option<String>,
    /// PEM file of the client certificate's private key.
    #[arg(long, env = "KAFKA_SSL_KEY_LOCATION")]
    pub kafka_ssl_key_location: Option<String>,
    /// Password of the private key, when it is encrypted.
    #[arg(long, env = "KAFKA_SSL_KEY_PASSWORD", hide_env_values = true)]
    pub kafka_ssl_key_password: Option<String>,
    /// Any other librdkafka property, `KEY=VALUE`; repeatable, or `;`-separated in the
    /// variable. Properties pageview relies on (group, commits, acks, …) are refused.
    #[arg(
        long = "kafka-option",
        env = "KAFKA_OPTIONS",
        value_name = "KEY=VALUE",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub kafka_options: Vec<String>,
}

/// Passwords and option values show as `***`, in case anything prints the arguments.
impl std::fmt::Debug for KafkaSecurityArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |value: &Option<String>| value.as_ref().map(|_| "***");
        let option_keys: Vec<&str> = self
            .kafka_options
            .iter()
            .map(|option| option.split('=').next().unwrap_or_default())
            .collect();
        f.debug_struct("KafkaSecurityArgs")
            .field("kafka_security_protocol", &self.kafka_security_protocol)
            .field("kafka_sasl_mechanism", &self.kafka_sasl_mechanism)
            .field("kafka_sasl_username", &self.kafka_sasl_username)
            .field("kafka_sasl_password", &hidden(&self.kafka_sasl_password))
            .field("kafka_sasl_password_file", &self.kafka_sasl_password_file)
            .field("kafka_ssl_ca_location", &self.kafka_ssl_ca_location)
            .field(
                "kafka_ssl_certificate_location",
                &self.kafka_ssl_certificate_location,
            )
            .field("kafka_ssl_key_location", &self.kafka_ssl_key_location)
            .field(
                "kafka_ssl_key_password",
                &hidden(&self.kafka_ssl_key_password),
            )
            .field("kafka_options (keys)", &option_keys)
            .finish()
    }
}

/// A setting's value, `None` when it is unset or empty.
fn given<T: AsRef<std::ffi::OsStr>>(value: &Option<T>) -> Option<&T> {
    value.as_ref().filter(|v| !v.as_ref().is_empty())
}

/// A choice among `T`'s values, named case-insensitively.
fn choice<T: ValueEnum>(
    value: &Option<String>,
    setting: &'static str,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = given(value) else {
        return Ok(None);
    };
    T::from_str(value, true).map(Some).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        ConfigError::Invalid {
            setting,
            problem: format!("{value:?} is not one of {}", names.join(", ")),
        }
    })
}

impl KafkaSecurityArgs {
    /// The cluster at `servers`, reached as these settings say. MSK IAM tokens are signed for
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), the cluster's region.
    pub fn cluster(&self, servers: &str) -> Result<Cluster, ConfigError> {
        let invalid = |setting, problem: String| ConfigError::Invalid { setting, problem };
        if servers.trim().is_empty() {
            return Err(invalid("KAFKA_BOOTSTRAP_SERVERS", "is empty".into()));
        }
        let mechanism: Option<Mechanism> =
            choice(&self.kafka_sasl_mechanism, "KAFKA_SASL_MECHANISM")?;
        let protocol = choice(&self.kafka_security_protocol, "KAFKA_SECURITY_PROTOCOL")?;
        let protocol = protocol.unwrap_or(match mechanism {
            Some(_) => Protocol::SaslSsl,
            None => Protocol::Plaintext,
        });
        let sasl = match (protocol.is_sasl(), mechanism) {
            (true, None) => {
                return Err(invalid(
                    "KAFKA_SASL_MECHANISM",
                    format!(
                        "{} needs one: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM",
                        protocol.as_str()
                    ),
                ));
            }
            (false, Some(m)) => {
                return Err(invalid(
                    "KAFKA_SASL_MECHANISM",
                    format!(
                        "{} is set, but KAFKA_SECURITY_PROTOCOL is {}, which has no SASL (use SASL_SSL or SASL_PLAINTEXT)",
                        m.as_str(),
                        protocol.as_str()
                    ),
                ));
            }
            (false, None) => None,
            (true, Some(m)) if m.needs_password() => Some(self.password_identity(m)?),
            (true, Some(Mechanism::AwsMskIam)) => {
                let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
                    .iter()
                    .find_map(|name| std::env::var(name).ok().filter(|r| !r.is_empty()))
                    .ok_or_else(|| {
                        invalid(
                            "AWS_REGION",
                            "is not set; AWS_MSK_IAM signs its tokens for the cluster's region"
                                .into(),
                        )
                    })?;
                Some(Sasl::AwsMskIam { region })
            }
            (true, Some(_)) => Some(Sasl::OAuthBearer),
        };
        if !mechanism.is_some_and(Mechanism::needs_password)
            && (given(&self.kafka_sasl_username).is_some()
                || given(&self.kafka_sasl_password).is_some()
                || given(&self.kafka_sasl_password_file).is_some())
        {
            return Err(invalid(
                "KAFKA_SASL_USERNAME",
                "a username or password is set, but KAFKA_SASL_MECHANISM is not PLAIN or SCRAM"
                    .into(),
            ));
        }
        let tls = Tls {
            ca: readable(&self.kafka_ssl_ca_location, "KAFKA_SSL_CA_LOCATION")?,
            certificate: readable(
                &self.kafka_ssl_certificate_location,
                "KAFKA_SSL_CERTIFICATE_LOCATION",
            )?,
            key: readable(&self.kafka_ssl_key_location, "KAFKA_SSL_KEY_LOCATION")?,
            key_password: given(&self.kafka_ssl_key_password)
                .cloned()
                .map(Secret::new),
        };
        if tls.certificate.is_some() != tls.key.is_some() {
            return Err(invalid(
                "KAFKA_SSL_CERTIFICATE_LOCATION",
                "a client certificate and its key (KAFKA_SSL_KEY_LOCATION) go together".into(),
            ));
        }
        if !protocol.is_tls() && (tls != Tls::default()) {
            return Err(invalid(
                "KAFKA_SECURITY_PROTOCOL",
                format!(
                    "is {}, which has no TLS, but TLS files are set (use SSL or SASL_SSL)",
                    protocol.as_str()
                ),
            ));
        }
        let options = self
            .kafka_options
            .iter()
            .filter(|option| !option.trim().is_empty())
            .map(|option| pass_through(option))
            .collect::<Result<_, _>>()?;
        let security = Security {
            protocol,
            sasl,
            tls,
            options,
        };
        let cluster = Cluster {
            servers: servers.to_string(),
            security,
        };
        crate::kafka::check_client_config(&cluster)
            .map_err(|problem| invalid("KAFKA_OPTIONS", problem))?;
        Ok(cluster)
    }

    fn password_identity(&self, mechanism: Mechanism) -> Result<Sasl, ConfigError> {
        let invalid = |setting, problem: String| ConfigError::Invalid { setting, problem };
        let username = given(&self.kafka_sasl_username).cloned().ok_or_else(|| {
            invalid(
                "KAFKA_SASL_USERNAME",
                format!("{} needs a username", mechanism.as_str()),
            )
        })?;
        let password = match (
            given(&self.kafka_sasl_password),
            given(&self.kafka_sasl_password_file),
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "KAFKA_SASL_PASSWORD_FILE",
                    "both it and KAFKA_SASL_PASSWORD are set; set one".into(),
                ));
            }
            (Some(password), None) => password.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "KAFKA_SASL_PASSWORD_FILE",
                        format!("cannot read {path}: {e}"),
                    )
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                text.strip_suffix('\r').unwrap_or(text).to_string()
            }
            (None, None) => String::new(),
        };
        if password.is_empty() {
            return Err(invalid(
                "KAFKA_SASL_PASSWORD",
                format!(
                    "{} needs a password (KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE)",
                    mechanism.as_str()
                ),
            ));
        }
        Ok(Sasl::Password {
            mechanism,
            username,
            password: Secret::new(password),
        })
    }
}

/// A file setting, checked readable now rather than when a client first connects.
fn readable(path: &Option<String>, setting: &'static str) -> Result<Option<PathBuf>, ConfigError> {
    let path = given(path).map(PathBuf::from);
    if let Some(path) = &path
        && let Err(e) = std::fs::File::open(path)
    {
        return Err(ConfigError::Invalid {
            setting,
            problem: format!("cannot read {}: {e}", path.display()),
        });
    }
    Ok(path)
}

/// `KEY=VALUE` → a pass-through option; the value is never quoted back, it may be a secret.
fn pass_through(option: &str) -> Result<(String, Secret), ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        setting: "KAFKA_OPTIONS",
        problem,
    };
    let Some((key, value)) = option.split_once('=') else {
        // Not even a prefix is quoted: without its `=` an option may be a bare secret.
        return Err(invalid(format!(
            "an option must be KEY=VALUE; one of {} characters has no `=`",
            option.chars().count()
        )));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(invalid("an option has an empty key".into()));
    }
    match RESERVED.iter().find(|(reserved, _)| *reserved == key) {
        Some((_, Reserved::Pageviews(why))) => Err(invalid(format!(
            "{key} is pageview's own and cannot be set ({why})"
        ))),
        Some((_, Reserved::Setting(setting))) => Err(invalid(format!(
            "{key} has a setting of its own: {setting}"
        ))),
        None => Ok((key.to_string(), Secret::new(value.to_string()))),
    }
}

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// JSONL input, one record per `\n`-terminated line; `-` reads stdin. Without it,
    /// records come from Kafka (`--bootstrap-servers`).
    #[arg(long, short, required_unless_present = "bootstrap_servers")]
    pub input: Option<PathBuf>,
    /// Kafka bootstrap servers, `host:port[,host:port…]`; `--input` takes precedence.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// With Kafka: read every partition up to where it ends at start-up, then stop, as for a
    /// backfill. Open windows carry over to the next run as on any stop.
    #[arg(long)]
    pub stop_at_end: bool,
    #[command(flatten)]
    pub kafka: ConsumerArgs,
    /// Where the datasets go: a folder (one subfolder per bucket) or `s3` (the buckets
    /// themselves; see the AWS settings). Write `./s3` for a folder named s3.
    #[arg(long, env = "STORAGE", value_parser = Location::parse)]
    pub storage: Location,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// How to reach S3 when `--storage s3`. Credentials come from the usual AWS sources:
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a web identity, or the instance's role.
#[derive(Debug, Args)]
pub struct S3Args {
    /// Region of the buckets.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// An S3-compatible endpoint, e.g. LocalStack's `http://localhost:4566` [default: AWS
    /// itself; the original's LOCALSTACK_ENDPOINT is read too].
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Size of each part of a multipart upload, in MiB (S3 needs at least 5); smaller files
    /// go up in one request.
    #[arg(long, env = "S3_PART_SIZE_MIB", default_value_t = 8, value_parser = clap::value_parser!(u32).range(5..=1024))]
    pub s3_part_size_mib: u32,
    /// Parts of one file uploading at once.
    #[arg(long, env = "S3_UPLOAD_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub s3_upload_concurrency: u32,
    /// A request S3 has not answered in this many ms is abandoned and tried again.
    #[arg(long, env = "S3_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub s3_timeout_ms: u64,
}

impl S3Args {
    pub fn settings(&self) -> Result<S3Settings, ConfigError> {
        let given = |e: &String| !e.is_empty();
        let endpoint = self
            .aws_endpoint_url
            .clone()
            .filter(given)
            .or_else(|| std::env::var("LOCALSTACK_ENDPOINT").ok().filter(given));
        if let Some(endpoint) = &endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                setting: "AWS_ENDPOINT_URL",
                problem: format!("{endpoint:?} is not an http:// or https:// URL"),
            });
        }
        if self.aws_region.is_empty() {
            return Err(ConfigError::Invalid {
                setting: "AWS_REGION",
                problem: "is empty".into(),
            });
        }
        Ok(S3Settings {
            region: self.aws_region.clone(),
            endpoint,
            part_size: (self.s3_part_size_mib as usize) << 20,
            concurrency: self.s3_upload_concurrency as usize,
            timeout: Duration::from_millis(self.s3_timeout_ms),
        })
    }
}

/// Which records the processor consumes from Kafka, and how progress is made durable.
#[derive(Debug, Args)]
pub struct ConsumerArgs {
    /// Topic of the events.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "pageview-events")]
    pub topic: String,
    /// Consumer group; processors in one group share the topic's partitions.
    #[arg(
        long,
        env = "KAFKA_CONSUMER_GROUP",
        default_value = "pageview-processor"
    )]
    pub group: String,
    /// Static group membership: a restarted processor with the same id gets its partitions
    /// back at once instead of after the session timeout (e.g. a pod name).
    #[arg(long, env = "KAFKA_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// A checkpoint (files published, offsets committed) at least this often, in ms; one
    /// also follows every window that closes (at most two a second).
    #[arg(long, env = "CHECKPOINT_INTERVAL_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub checkpoint_interval_ms: u64,
    /// A processor silent this long (ms) loses its partitions to the rest of the group; it
    /// also rejoins after that long without an answer from the broker.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 45_000, value_parser = clap::value_parser!(u32).range(6_000..=300_000))]
    pub session_timeout_ms: u32,
    #[command(flatten)]
    pub security: KafkaSecurityArgs,
}

impl ConsumerArgs {
    pub fn settings(&self, servers: &str) -> Result<ConsumerSettings, ConfigError> {
        Ok(ConsumerSettings {
            cluster: self.security.cluster(servers)?,
            topic: self.topic.clone(),
            group: self.group.clone(),
            instance_id: self.group_instance_id.clone(),
            session_timeout: Duration::from_millis(self.session_timeout_ms.into()),
            checkpoint_interval: Duration::from_millis(self.checkpoint_interval_ms),
        })
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Input sizes in events, comma separated (k, M and G suffixes allowed).
    #[arg(long, value_delimiter = ',', value_parser = parse_count, default_value = "1M,10M,20M")]
    pub sizes: Vec<u64>,
    /// Where generated inputs are kept between runs and outputs are written.
    #[arg(long, default_value_os_t = default_bench_dir())]
    pub dir: PathBuf,
    /// Run each process under `taskset -c CPU`, to measure one core.
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Runs of each measurement; the fastest is reported, as the least disturbed by
    /// whatever else the machine is doing.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Worker threads of the timed `process` runs from files, comma separated: a row each,
    /// to show how it scales [default: 1, and the cores this process may use].
    #[arg(long, value_delimiter = ',', value_parser = parse_threads)]
    pub threads: Vec<NonZero<usize>>,
    /// Time `process` consuming from this Kafka broker against a consume-only loop with the
    /// same client and settings, instead of from files.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,
    /// With `--kafka`: instead, measure produce → aggregate row readable at these rates
    /// (events/s, real time), comma separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_rate, requires = "kafka")]
    pub latency_rates: Vec<f64>,
    /// Windows measured per rate.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub latency_windows: u64,
    /// With `--kafka`: processors of one consumer group in each run, started together. In a
    /// latency run a window's row is readable once the group has merged it; a throughput run
    /// ends when the last of them has read its partitions to the end.
    #[arg(long, alias = "latency-processors", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3))]
    pub processors: u64,
    /// Window length for the latency runs, in seconds (shorter than the default 60 so a run
    /// sees several windows in a minute).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub latency_window_seconds: u32,
    /// Instead, time `process` writing to S3 (the buckets must exist: `buckets create`)
    /// against the same run to local disk and an upload-only loop of the same bytes.
    #[arg(long, conflicts_with = "kafka")]
    pub s3: bool,
    #[command(flatten)]
    pub s3_args: S3Args,
    #[command(flatten)]
    pub buckets: BucketArgs,
}

#[derive(Debug, Args)]
pub struct ParseOnlyArgs {
    #[arg(long, short)]
    pub input: PathBuf,
}

#[derive(Debug, Args)]
pub struct ConsumeOnlyArgs {
    #[arg(long)]
    pub bootstrap_servers: String,
    #[command(flatten)]
    pub kafka: ConsumerArgs,
}

fn default_bench_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(".cache/pageview/bench")
}

/// What the generator makes. Rate and shares default per command (see each flag).
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// Events per second [default: 1.16 for generate (the original's ~100K/day), 1000 for run].
    #[arg(long, env = "EVENT_RATE", value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Stop after this many events (k, M and G suffixes allowed) [default: run forever].
    #[arg(long, value_parser = parse_count)]
    pub events: Option<u64>,
    /// Seed for reproducible output [default: from the clock].
    #[arg(long, env = "GENERATOR_SEED")]
    pub seed: Option<u64>,
    /// Share of events deliberately malformed, 0..=1 [default: 0 for generate, 0.01 for run].
    #[arg(long, value_parser = parse_share)]
    pub malformed_share: Option<f64>,
    /// Share of valid events back-dated 10 minutes so they arrive late, 0..=1
    /// [default: 0 for generate, 0.002 for run].
    #[arg(long, value_parser = parse_share)]
    pub late_share: Option<f64>,
    /// Back-date valid events by up to this many ms, so they arrive out of order.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u32,
    /// Event time advances 1/rate per event as fast as events are made, not with the clock,
    /// until it reaches the clock; then events come at --rate in real time.
    #[arg(long)]
    pub simulated_time: bool,
    /// Event time of the first simulated event, epoch ms [default: so that --events end
    /// now; a day back without --events].
    #[arg(long, requires = "simulated_time", value_parser = clap::value_parser!(i64).range(946_684_800_000..=4_102_444_800_000))]
    pub start_time_ms: Option<i64>,
    /// Simulated time runs this many times as fast as the clock instead of as fast as events
    /// are made: `--rate 1.16 --speedup 60` makes a day of the original's events in 24
    /// minutes, paced as they would come.
    #[arg(long, requires = "simulated_time", value_parser = parse_speedup, allow_negative_numbers = true)]
    pub speedup: Option<f64>,
}

/// Per-command defaults for the generator flags that have none of their own.
pub struct GeneratorDefaults {
    pub rate: f64,
    pub malformed_share: f64,
    pub late_share: f64,
}

pub const GENERATE_DEFAULTS: GeneratorDefaults = GeneratorDefaults {
    rate: 1.16,
    malformed_share: 0.0,
    late_share: 0.0,
};

pub const RUN_DEFAULTS: GeneratorDefaults = GeneratorDefaults {
    rate: 1000.0,
    malformed_share: 0.01,
    late_share: 0.002,
};

impl GeneratorArgs {
    pub fn settings(&self, defaults: &GeneratorDefaults) -> Result<GeneratorConfig, ConfigError> {
        let malformed_share = self.malformed_share.unwrap_or(defaults.malformed_share);
        let late_share = self.late_share.unwrap_or(defaults.late_share);
        if malformed_share + late_share > 1.0 {
            return Err(ConfigError::Invalid {
                setting: "--malformed-share + --late-share",
                problem: format!("{malformed_share} + {late_share} is more than 1"),
            });
        }
        let rate = self.rate.unwrap_or(defaults.rate);
        Ok(GeneratorConfig {
            rate,
            events: self.events,
            seed: self.seed.unwrap_or_else(|| now_ms() as u64),
            malformed_share,
            late_share,
            jitter_ms: i64::from(self.jitter_ms),
            simulated_start_ms: self.simulated_time.then(|| {
                self.start_time_ms
                    .unwrap_or_else(|| simulated_start(now_ms(), rate, self.events))
            }),
            speedup: self.speedup,
        })
    }
}

/// How each dataset is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// Parquet files in Hive-style folders, visible as each is published.
    Parquet,
    /// A Delta Lake table at the root of each bucket: the same files, made part of the table
    /// by commits to its log.
    Delta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Codec {
    Snappy,
    Zstd,
    None,
}

impl Codec {
    fn compression(self) -> Compression {
        match self {
            Codec::Snappy => Compression::SNAPPY,
            Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Codec::None => Compression::UNCOMPRESSED,
        }
    }
}

/// Windowing, bucket names and file rolling: shared by every command that processes.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Tumbling window length in seconds.
    #[arg(long, env = "WINDOW_SIZE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub window_size_seconds: u32,
    /// How far the watermark trails each partition's event-time clock, in ms.
    #[arg(long, env = "WATERMARK_DELAY_MS", default_value_t = 5000)]
    pub watermark_delay_ms: u32,
    /// A partition that delivers nothing for this long stops holding the watermark back
    /// (`500ms`, `30s`, `2m`).
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// An event more than this far ahead of its reference time (a Kafka record's timestamp;
    /// for a file or stdin, the clock) is a dead letter, `future_timestamp` (`30m`, `1h`,
    /// `off`).
    #[arg(long, env = "MAX_FUTURE_SKEW", default_value = "1h", value_parser = parse_skew)]
    pub max_future_skew: Skew,
    /// The reference time of records without one of their own (a file, stdin), instead of
    /// the clock: a backfill decides the same whenever it runs [ms since the epoch, or a
    /// time like 2026-11-30T05:42:00Z].
    #[arg(long, env = "REFERENCE_TIME_MS", value_parser = parse_time)]
    pub reference_time_ms: Option<i64>,
    #[command(flatten)]
    pub buckets: BucketArgs,
    /// A file is published once its encoded size reaches this many bytes.
    #[arg(long, env = "FILE_MAX_BYTES", default_value_t = 128 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub file_max_bytes: u64,
    /// A file is published once it has been open this many ms, so data shows up promptly.
    #[arg(long, env = "FILE_MAX_AGE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub file_max_age_ms: u64,
    /// Parquet compression codec.
    #[arg(long, env = "PARQUET_COMPRESSION", value_enum, default_value_t = Codec::Snappy)]
    pub compression: Codec,
    /// How each dataset is laid out: Parquet folders, or Delta Lake tables.
    #[arg(long, env = "TABLE_FORMAT", value_enum, default_value_t = TableFormat::Parquet)]
    pub table_format: TableFormat,
    /// Delta tables: a pass of compaction every this many ms while processing, on a thread
    /// of its own (0: none; `pageview compact` compacts on demand).
    #[arg(long, env = "COMPACT_INTERVAL_MS", default_value_t = 60_000)]
    pub compact_interval_ms: u64,
    /// Worker threads that validate input and encode Parquet while the processing thread
    /// routes; 1 does everything on the processing thread. The outputs are the same for
    /// any count [default: the cores this process may use, its cgroup's CPU limit included].
    #[arg(long, env = "THREADS", value_parser = parse_threads)]
    pub threads: Option<NonZero<usize>>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub dlq: DlqRetentionArgs,
}

/// The bucket names, from the environment's defaults or given one by one.
#[derive(Debug, Args)]
pub struct BucketArgs {
    /// Environment in the default bucket names `pageview-pipeline-<env>-…`.
    #[arg(long, env = "ENVIRONMENT", default_value = "local")]
    pub environment: String,
    /// Bucket (folder) for raw events [default: pageview-pipeline-<env>-raw-events].
    #[arg(long, env = "RAW_EVENTS_BUCKET")]
    pub raw_events_bucket: Option<String>,
    /// Bucket (folder) for aggregated windows [default: pageview-pipeline-<env>-aggregated].
    #[arg(long, env = "AGGREGATED_BUCKET")]
    pub aggregated_bucket: Option<String>,
    /// Bucket (folder) for dead letters [default: pageview-pipeline-<env>-dlq].
    #[arg(long, env = "DLQ_BUCKET")]
    pub dlq_bucket: Option<String>,
    /// Bucket (folder) for Kafka checkpoint manifests [default:
    /// pageview-pipeline-<env>-checkpoints].
    #[arg(long, env = "CHECKPOINTS_BUCKET")]
    pub checkpoints_bucket: Option<String>,
}

const CHECKPOINTS_BUCKET: &str = "CHECKPOINTS_BUCKET";

/// The datasets' bucket names (SPEC.md 2), and where checkpoints go.
impl BucketArgs {
    /// The bucket named for `dataset`, if one is.
    fn given(&self, dataset: Dataset) -> &Option<String> {
        match dataset {
            Dataset::Raw => &self.raw_events_bucket,
            Dataset::Aggregated => &self.aggregated_bucket,
            Dataset::Dlq => &self.dlq_bucket,
        }
    }

    pub fn resolve(&self) -> Result<Buckets, ConfigError> {
        let env = &self.environment;
        // Empty is unset, as `NAME: ${NAME:-}` in a compose file passes it.
        let pick = |given: &Option<String>, setting, suffix: &str| {
            let name = given
                .clone()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| format!("pageview-pipeline-{env}-{suffix}"));
            check_bucket_name(&name)
                .map_err(|problem| ConfigError::Invalid { setting, problem })?;
            Ok(name)
        };
        let mut datasets: [String; Dataset::ALL.len()] = Default::default();
        for dataset in Dataset::ALL {
            let given = self.given(dataset);
            datasets[dataset.index()] =
                pick(given, dataset.bucket_setting(), dataset.bucket_suffix())?;
        }
        let checkpoints = pick(&self.checkpoints_bucket, CHECKPOINTS_BUCKET, "checkpoints")?;
        let buckets = Buckets::new(datasets, checkpoints);
        let named: Vec<(&'static str, &str)> = Dataset::ALL
            .iter()
            .map(|&d| (d.bucket_setting(), buckets.of(d)))
            .chain([(CHECKPOINTS_BUCKET, buckets.checkpoints.as_str())])
            .collect();
        for (i, &(setting, name)) in named.iter().enumerate() {
            if let Some((first, _)) = named[..i].iter().find(|(_, n)| *n == name) {
                return Err(ConfigError::Invalid {
                    setting,
                    problem: format!(
                        "{name:?} is {first}'s bucket too: the datasets and the checkpoints need different buckets"
                    ),
                });
            }
        }
        Ok(buckets)
    }
}

impl PipelineArgs {
    /// The settings, checked once: every later use of them cannot fail.
    pub fn settings(&self) -> Result<PipelineSettings, ConfigError> {
        Ok(PipelineSettings {
            window: WindowSpec::new(i64::from(self.window_size_seconds) * 1000),
            watermark_delay_ms: i64::from(self.watermark_delay_ms),
            idle_timeout: self.idle_timeout,
            max_future_skew: self.max_future_skew.0,
            reference_time_ms: self.reference_time_ms,
            buckets: self.buckets.resolve()?,
            file_max_bytes: self.file_max_bytes,
            file_max_age: Duration::from_millis(self.file_max_age_ms),
            compression: self.compression.compression(),
            table_format: self.table_format,
            workers: Workers::new(self.threads.unwrap_or_else(available_cores)),
            compaction: (self.table_format == TableFormat::Delta && self.compact_interval_ms > 0)
                .then(|| CompactionSettings {
                    interval: Duration::from_millis(self.compact_interval_ms),
                    target_bytes: self.target.bytes(),
                    dlq_retention: self.dlq.retention(),
                }),
        })
    }
}

/// How records are windowed and files written, validated: what the pipeline, `--check-config`
/// and every rebalance use.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub window: WindowSpec,
    pub watermark_delay_ms: i64,
    pub idle_timeout: Duration,
    /// `None`: events may be any distance ahead.
    pub max_future_skew: Option<Duration>,
    /// Pins the reference time of records without one.
    pub reference_time_ms: Option<i64>,
    pub buckets: Buckets,
    pub file_max_bytes: u64,
    pub file_max_age: Duration,
    pub compression: Compression,
    pub table_format: TableFormat,
    /// Where input is validated and output encoded beside the processing thread.
    pub workers: Workers,
    /// `None`: no compaction while processing.
    pub compaction: Option<CompactionSettings>,
}

impl PipelineSettings {
    /// A fresh window operator.
    pub fn windows(&self) -> Windows {
        Windows::new(self.window, self.watermark_delay_ms)
    }

    /// The future bound of a router starting now.
    pub fn future_bound(&self) -> FutureBound {
        FutureBound::new(
            self.max_future_skew,
            self.reference_time_ms,
            now_ms(),
            Instant::now(),
        )
    }

    /// How the sinks name and roll files whose names carry `tags`.
    pub fn sink_config(&self, tags: Tags) -> SinkConfig {
        SinkConfig {
            buckets: self.buckets.clone(),
            tags,
            max_file_bytes: self.file_max_bytes,
            max_file_age: self.file_max_age,
            compression: self.compression,
            partials: None,
            workers: self.workers.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {setting}: {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
}

/// S3's bucket naming rules, so a name that works on disk also works on S3.
fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len()) {
        Err(format!(
            "bucket name {name:?} must be 3 to 63 characters long"
        ))
    } else if !ok_chars
        || !ends_ok(name.as_bytes().first())
        || !ends_ok(name.as_bytes().last())
        || name.contains("..")
    {
        Err(format!(
            "bucket name {name:?} may hold only lowercase letters, digits, '-' and '.', and must start and end with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e9 => Ok(r),
        _ => Err("must be a number of events per second above 0 (at most 1e9)".into()),
    }
}

fn parse_speedup(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(k) if k.is_finite() && k > 0.0 && k <= 1e6 => Ok(k),
        _ => Err("must be a factor above 0 (at most 1e6)".into()),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("must be a share between 0 and 1".into()),
    }
}

/// A time in ms since the epoch: RFC 3339 (`2026-11-30T05:42:00Z`, `…+01:00`), a UTC date
/// and time (`2026-11-30T05:42`, `2026-11-30 05:42:30`), or a number of ms.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let formats = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ];
    let utc = s.strip_suffix('Z').unwrap_or(s);
    formats
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(utc, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| {
            format!("{s:?} is not a time like 2026-11-30T05:42:00Z, 2026-11-30 05:42 or ms since the epoch")
        })
}

/// `250ms`, `30s`, `2m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let wrong = || format!("{s:?} is not a duration like 500ms, 30s, 2m or 1h");
    let n: u64 = digits.parse().map_err(|_| wrong())?;
    let seconds = |scale: u64| {
        n.checked_mul(scale)
            .map(Duration::from_secs)
            .ok_or_else(wrong)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(wrong()),
    }
}

/// How far ahead of its reference an event may be; `off`: any distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew(pub Option<Duration>);

fn parse_skew(s: &str) -> Result<Skew, String> {
    if s == "off" {
        return Ok(Skew(None));
    }
    parse_duration(s)
        .map(|d| Skew(Some(d)))
        .map_err(|e| format!("{e}, or off"))
}

/// `1500`, `10k`, `10M`, `1G`.
/// A thread count: at least 1, and no more than a machine has cores.
fn parse_threads(s: &str) -> Result<NonZero<usize>, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(NonZero::new(n).expect("at least 1")),
        _ => Err(format!("{s:?} is not a thread count from 1 to 1024")),
    }
}

pub fn parse_count(s: &str) -> Result<u64, String> {
    let (digits, scale) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1_000),
        Some(b'M') => (&s[..s.len() - 1], 1_000_000),
        Some(b'G') => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{s:?} is not a count (a whole number, optionally with k, M or G)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_arguments_never_print_their_secrets() {
        let cli = parse(&[
            "process",
            "--bootstrap-servers",
            "b:9096",
            "--storage",
            "out",
            "--kafka-sasl-mechanism",
            "PLAIN",
            "--kafka-sasl-username",
            "key",
            "--kafka-sasl-password",
            "pass-1",
            "--kafka-ssl-key-password",
            "pass-2",
            "--kafka-option",
            "sasl.oauthbearer.config=pass-3",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(shown.contains("sasl.oauthbearer.config"), "{shown}");
        assert!(!shown.contains("pass-"), "{shown}");
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pageview").chain(args.iter().copied()))
    }

    fn pipeline(args: &[&str]) -> PipelineArgs {
        let mut full = vec!["process", "--input", "x", "--storage", "y"];
        full.extend_from_slice(args);
        match parse(&full).unwrap().command {
            Command::Process(p) => p.pipeline,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn times_are_rfc3339_utc_or_ms() {
        let ms = 1_796_017_320_000;
        for s in [
            "2026-11-30T05:42:00Z",
            "2026-11-30T06:42:00+01:00",
            "2026-11-30T05:42",
            "2026-11-30T05:42Z",
            "2026-11-30 05:42:00",
            "2026-11-30 05:42",
            "1796017320000",
        ] {
            assert_eq!(parse_time(s), Ok(ms), "{s}");
        }
        let error = parse_time("yesterday").unwrap_err();
        assert!(error.contains("\"yesterday\" is not a time"), "{error}");
    }

    #[test]
    fn default_buckets_follow_the_original_names() {
        let buckets = pipeline(&[]).buckets.resolve().unwrap();
        assert_eq!(
            buckets.with_checkpoints(),
            [
                "pageview-pipeline-local-raw-events",
                "pageview-pipeline-local-aggregated",
                "pageview-pipeline-local-dlq",
                "pageview-pipeline-local-checkpoints"
            ]
        );
        let prod = pipeline(&["--environment", "prod"])
            .buckets
            .resolve()
            .unwrap();
        assert_eq!(prod.of(Dataset::Dlq), "pageview-pipeline-prod-dlq");
    }

    #[test]
    fn one_bucket_for_two_uses_names_both_settings() {
        let err = pipeline(&["--checkpoints-bucket", "pageview-pipeline-local-dlq"])
            .buckets
            .resolve()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid CHECKPOINTS_BUCKET: \"pageview-pipeline-local-dlq\" is DLQ_BUCKET's bucket too: \
             the datasets and the checkpoints need different buckets"
        );
    }

    #[test]
    fn bad_bucket_names_name_the_setting() {
        let err = pipeline(&["--dlq-bucket", "Bad_Name"])
            .buckets
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("DLQ_BUCKET"), "{err}");
        let err = pipeline(&["--environment", "UPPER"])
            .buckets
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("RAW_EVENTS_BUCKET"), "{err}");
        let err = pipeline(&["--dlq-bucket", "pageview-pipeline-local-raw-events"])
            .buckets
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("different"), "{err}");
    }

    #[test]
    fn counts_and_ranges() {
        assert_eq!(parse_count("10M"), Ok(10_000_000));
        assert_eq!(parse_count("3k"), Ok(3_000));
        assert_eq!(parse_count("42"), Ok(42));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("1.5M").is_err());
        assert!(parse_count("99999999999G").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("nan").is_err());
        assert!(parse_rate("inf").is_err());
        assert!(parse_share("1.01").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
        assert_eq!(parse_skew("off"), Ok(Skew(None)));
        assert_eq!(parse_skew("90m"), Ok(Skew(Some(Duration::from_secs(5400)))));
        assert!(parse_skew("none").unwrap_err().contains("or off"));
        assert!(
            parse(&[
                "process",
                "--input",
                "x",
                "--storage",
                "y",
                "--window-size-seconds",
                "0"
            ])
            .is_err()
        );
        assert!(parse(&["generate", "-o", "x", "--start-time-ms", "1700000000000"]).is_err());
    }

    #[test]
    fn shares_must_leave_room_for_each_other() {
        let Command::Generate(g) = parse(&[
            "generate",
            "-o",
            "-",
            "--malformed-share",
            "0.7",
            "--late-share",
            "0.5",
        ])
        .unwrap()
        .command
        else {
            unreachable!()
        };
        assert!(g.generator.settings(&GENERATE_DEFAULTS).is_err());
    }

    #[test]
    fn per_command_defaults() {
        let Command::Run(r) = parse(&["run"]).unwrap().command else {
            unreachable!()
        };
        let c = r.generator.settings(&RUN_DEFAULTS).unwrap();
        assert_eq!(c.rate, 1000.0);
        assert_eq!(c.simulated_start_ms, None);
        let Command::Generate(g) = parse(&[
            "generate",
            "-o",
            "-",
            "--simulated-time",
            "--start-time-ms",
            "1700000000000",
        ])
        .unwrap()
        .command
        else {
            unreachable!()
        };
        let c = g.generator.settings(&GENERATE_DEFAULTS).unwrap();
        assert_eq!(c.rate, 1.16);
        assert_eq!(c.simulated_start_ms, Some(1_700_000_000_000));
    }
}
