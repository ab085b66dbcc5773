//! The `pageview` command line: wires sources, the router and sinks for each subcommand.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use pageview::commit::Manifests;
use pageview::config::{
    BucketsCommand, Cli, Command, ConfigError, ConsumeOnlyArgs, GENERATE_DEFAULTS, GenerateArgs,
    InspectArgs, ParseOnlyArgs, PipelineSettings, ProcessArgs, RUN_DEFAULTS, RunArgs, S3Args,
};
use pageview::generate::{Generator, GeneratorConfig};
use pageview::kafka::{self, Cluster, KeyChoice, ProducerSettings, TopicState};
use pageview::observe::{Exposed, Progress, RUN_METRICS_PORT, expose};
use pageview::pipeline::{Ending, Until, consume_group, drive};
use pageview::route::Router;
use pageview::sink::{Sinks, Tags, naming};
use pageview::source::kafka::{GroupConsumer, Polled, Rebalanced};
use pageview::source::{Poll, StreamSource, open_input};
use pageview::storage::{LocalStorage, Location, S3Settings, S3Storage, Storage, buckets};
use pageview::{bench, report};

/// Partitions of the topic `run --kafka` creates, as the original's set-up does.
const RUN_PARTITIONS: i32 = 3;

/// Exit code after an interrupt, as shells report for SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = pageview::logging::init(cli.log_format, &cli.log_level) {
        eprintln!("pageview: error: {e}");
        return ExitCode::FAILURE;
    }
    if cli.check_config {
        return match check_config(&cli.command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pageview: error: {}", one_line(&e));
                ExitCode::FAILURE
            }
        };
    }
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Generate(args) => generate(args),
        Command::Process(args) => process(args),
        Command::Buckets(command) => create_buckets(command),
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Inspect(args) => inspect(args),
        Command::ParseOnly(args) => parse_only(args),
        Command::ConsumeOnly(args) => consume_only(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pageview: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: the validation each command does before it starts, and nothing else.
fn check_config(command: &Command) -> Result<()> {
    let storage = |location: &Location, s3: &S3Args, pipeline: &PipelineSettings| -> Result<()> {
        if *location == Location::S3 {
            s3_settings(s3, pipeline)?;
        }
        Ok(())
    };
    let summary = match command {
        Command::Run(args) => {
            args.generator.settings(&RUN_DEFAULTS)?;
            args.pipeline.settings()?;
            if let Some(servers) = &args.kafka {
                args.consumer.settings(servers)?;
            }
            format!("run into {}", args.data_dir.display())
        }
        Command::Generate(args) => {
            args.generator.settings(&GENERATE_DEFAULTS)?;
            match (&args.output, &args.kafka.bootstrap_servers) {
                (Some(path), _) => format!("generate to {}", path.display()),
                (None, Some(servers)) => {
                    let cluster = args.kafka.security.cluster(servers)?;
                    format!(
                        "generate to {} at {servers} ({})",
                        args.kafka.topic,
                        cluster.security.describe()
                    )
                }
                (None, None) => unreachable!("clap requires --output or --bootstrap-servers"),
            }
        }
        Command::Process(args) => {
            let pipeline = args.pipeline.settings()?;
            storage(&args.storage, &args.s3, &pipeline)?;
            let from = match (&args.input, &args.bootstrap_servers) {
                (Some(input), _) => input.display().to_string(),
                (None, Some(servers)) => format!(
                    "{} at {servers} ({}) as group {}",
                    args.kafka.topic,
                    args.kafka.settings(servers)?.cluster.security.describe(),
                    args.kafka.group
                ),
                (None, None) => unreachable!("clap requires --input or --bootstrap-servers"),
            };
            format!("process {from} into {}", describe(&args.storage, &pipeline))
        }
        Command::Buckets(BucketsCommand::Create(args)) => {
            let settings = args.s3.settings()?;
            let names = args.buckets.resolve()?;
            format!(
                "create {}, {}, {} and {} at {}",
                names.raw,
                names.aggregated,
                names.dlq,
                names.checkpoints,
                settings.endpoint_name()
            )
        }
        Command::Inspect(args) => {
            args.buckets.resolve()?;
            if args.storage == Location::S3 {
                args.s3.settings()?;
            }
            format!("inspect {}", args.storage)
        }
        Command::Bench(_) | Command::ParseOnly(_) | Command::ConsumeOnly(_) => "benchmark".into(),
    };
    println!("configuration is valid: {summary}");
    Ok(())
}

/// The error and its causes on one line, each cause once: our error types already quote
/// their source in their message, and repeating it would double the line.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (index 15 in both v2 and v3); libmimalloc-sys does
/// not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Every batch frees and allocates column buffers of a few hundred KiB. mimalloc hands freed
/// memory back to the kernel after 10 ms, so each batch page-faulted fresh zeroed pages (a
/// tenth of the run time in profiles); never purging keeps them for reuse. Peak memory is
/// unchanged: it is what the batches need at once.
fn keep_freed_memory() {
    // SAFETY: sets an allocator option before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
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

/// Opens where the datasets go (creating a folder, or checking every bucket answers), so a
/// bad location fails before any input is read. `checkpoints`: the checkpoint bucket is used.
fn open_storage(
    location: &Location,
    s3: &S3Args,
    pipeline: &PipelineSettings,
    checkpoints: bool,
    exposed: &Exposed,
) -> Result<Arc<dyn Storage>> {
    let observer = exposed.storage_observer();
    Ok(match location {
        Location::Local(root) => Arc::new(LocalStorage::open(root)?.observed_by(observer)),
        Location::S3 => {
            let settings = s3_settings(s3, pipeline)?;
            let names = &pipeline.buckets;
            let mut used = vec![&*names.raw, &*names.aggregated, &*names.dlq];
            if checkpoints {
                used.push(&names.checkpoints);
            }
            Arc::new(S3Storage::open(&settings, &used, observer)?)
        }
    })
}

/// The S3 settings, and the file size limit S3 imposes on top of local storage's.
fn s3_settings(s3: &S3Args, pipeline: &PipelineSettings) -> Result<S3Settings, ConfigError> {
    if pipeline.file_max_bytes > S3_MAX_FILE_BYTES {
        return Err(ConfigError::Invalid {
            setting: "FILE_MAX_BYTES",
            problem: format!(
                "{} is above {S3_MAX_FILE_BYTES}, the most S3 publishes in one copy",
                pipeline.file_max_bytes
            ),
        });
    }
    s3.settings()
}

/// Where the datasets went, for the last line of a run.
fn describe(location: &Location, pipeline: &PipelineSettings) -> String {
    let b = &pipeline.buckets;
    match location {
        Location::S3 => format!("s3://{}, s3://{}, s3://{}", b.raw, b.aggregated, b.dlq),
        Location::Local(_) => location.to_string(),
    }
}

/// Wires the router onto opened storage, its files named by `tags`.
fn router(pipeline: &PipelineSettings, tags: Tags, storage: Arc<dyn Storage>) -> Router {
    Router::new(
        pipeline.windows(),
        Sinks::new(storage, &pipeline.sink_config(tags)),
        pipeline.idle_timeout,
    )
}

/// `inspect`: reads what is there and changes nothing, so a folder must already exist.
fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let buckets = args.buckets.resolve()?;
    let storage: Arc<dyn Storage> = match &args.storage {
        Location::Local(root) => {
            if !root.is_dir() {
                anyhow::bail!(
                    "{} is not a folder: nothing was written there (give the folder `run \
                     --data-dir` or `process --storage` wrote to)",
                    root.display()
                );
            }
            Arc::new(LocalStorage::open(root)?)
        }
        Location::S3 => {
            let settings = args.s3.settings()?;
            let used = [&*buckets.raw, &*buckets.aggregated, &*buckets.dlq];
            Arc::new(S3Storage::open(&settings, &used, None)?)
        }
    };
    let request = pageview::inspect::Request {
        windows: args.windows as usize,
        window_at: args.window,
        samples: args.samples as usize,
    };
    let inspection = pageview::inspect::inspect(&storage, &buckets, &request)?;
    println!("{}\n", args.storage);
    print!("{inspection}");
    Ok(ExitCode::SUCCESS)
}

fn create_buckets(command: BucketsCommand) -> Result<ExitCode> {
    let BucketsCommand::Create(args) = command;
    let settings = args.s3.settings()?;
    let plan = buckets::plan(&args.buckets.resolve()?, args.dlq_retention_days);
    for (name, outcome) in buckets::create(&settings, &plan)? {
        let what = match outcome {
            buckets::Outcome::Created => "created",
            buckets::Outcome::Existed => "exists; settings and rules applied again",
        };
        println!("{name}: {what}");
    }
    println!(
        "lifecycle: raw and aggregated to Glacier after {} days; dead letters expire after {} days",
        buckets::ARCHIVE_AFTER_DAYS,
        args.dlq_retention_days
    );
    Ok(ExitCode::SUCCESS)
}

fn process(args: ProcessArgs) -> Result<ExitCode> {
    let pipeline = args.pipeline.settings()?;
    let Some(input) = &args.input else {
        return process_kafka(&args, &pipeline);
    };
    let label = match input.file_stem() {
        Some(stem) if input != Path::new("-") => stem.to_string_lossy().into_owned(),
        _ => "stdin".into(),
    };
    let mut source = open_input(input)?;
    let exposed = expose(&args.metrics, None, true, false)?;
    let storage = open_storage(&args.storage, &args.s3, &pipeline, false, &exposed)?;
    let mut router = router(&pipeline, Tags::Fixed(naming::source_tag(&label)), storage);
    let stop = stop_flag()?;
    exposed.health.set_connected(true);
    let started = Instant::now();
    // A regular file's size, for how far through it the run is; stdin has none.
    let size = std::fs::metadata(input)
        .ok()
        .filter(|m| m.is_file() && input != Path::new("-"))
        .map(|m| m.len());
    let progress = Progress::new("processing", exposed.observed()).of_input(size);
    let ending = drive(
        source.as_mut(),
        &mut router,
        &stop,
        progress.every,
        &mut |r, bytes| progress.show(r, bytes),
    )?;
    progress.done(&router);
    print!(
        "{}",
        report::summary(router.stats(), started.elapsed(), Some(source.bytes_read()))
    );
    println!("output: {}", describe(&args.storage, &pipeline));
    if ending == Ending::Stopped {
        tracing::warn!(
            "interrupted after {} records; everything read so far is written",
            router.stats().records
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(ExitCode::SUCCESS)
}

/// `process --bootstrap-servers`: a member of the consumer group until stopped. Exactly once
/// through checkpoints (docs/EXACTLY_ONCE.md).
fn process_kafka(args: &ProcessArgs, pipeline: &PipelineSettings) -> Result<ExitCode> {
    let servers = args
        .bootstrap_servers
        .as_deref()
        .expect("clap requires --input or --bootstrap-servers");
    let settings = args.kafka.settings(servers)?;
    let stop = stop_flag()?;
    let drain = AtomicBool::new(args.stop_at_end);
    let started = Instant::now();
    let until = Until {
        stop: &stop,
        drain: &drain,
    };
    let exposed = expose(&args.metrics, None, true, false)?;
    let storage = open_storage(&args.storage, &args.s3, pipeline, true, &exposed)?;
    let router = consume_group(&settings, pipeline, storage, &until, exposed.observed())?;
    if let Some(router) = router {
        print!(
            "{}",
            report::summary(router.stats(), started.elapsed(), None)
        );
    }
    println!("output: {}", describe(&args.storage, pipeline));
    Ok(ExitCode::SUCCESS)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let config = args.generator.settings(&RUN_DEFAULTS)?;
    let pipeline = args.pipeline.settings()?;
    if let Some(servers) = &args.kafka {
        return run_kafka(&args, &pipeline, config, servers);
    }
    let label = format!("run{}", pageview::generate::now_ms());
    let exposed = expose(&args.metrics, Some(RUN_METRICS_PORT), true, false)?;
    let storage = LocalStorage::open(&args.data_dir)?.observed_by(exposed.storage_observer());
    let tags = Tags::Fixed(naming::source_tag(&label));
    let mut router = router(&pipeline, tags, Arc::new(storage));
    let stop = stop_flag()?;
    exposed.health.set_connected(true);
    introduce(&args, &config, "");
    let (chunks, mut source) = StreamSource::embedded("pageview-events");
    let generator_stop = stop.clone();
    let generator = std::thread::spawn(move || {
        Generator::new(config).send_to(&chunks, &generator_stop);
    });
    let started = Instant::now();
    let progress = Progress::new("running", exposed.observed());
    // The processor stops when the generator does and the stream it made has drained.
    let never = AtomicBool::new(false);
    drive(
        &mut source,
        &mut router,
        &never,
        progress.every,
        &mut |r, _| progress.show(r, 0),
    )?;
    progress.done(&router);
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    print!(
        "{}",
        report::summary(router.stats(), started.elapsed(), None)
    );
    println!("output: {}", args.data_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// What `run` is about to do, in two or three lines.
fn introduce(args: &RunArgs, config: &GeneratorConfig, through: &str) {
    println!(
        "pageview run: generating {} events/s{}{through} into {} (Ctrl-C stops, flushing everything)",
        config.rate,
        if config.simulated_start_ms.is_some() {
            " of simulated time"
        } else {
            ""
        },
        args.data_dir.display()
    );
    println!(
        "windows of {} s are written {} ms after they end; files publish every {} ms or {} MiB",
        args.pipeline.window_size_seconds,
        args.pipeline.watermark_delay_ms,
        args.pipeline.file_max_age_ms,
        args.pipeline.file_max_bytes >> 20
    );
    if config.simulated_start_ms.is_none() {
        println!("(add --simulated-time to see hundreds of windows in seconds)");
    }
}

/// `run --kafka`: the generator produces to the topic on a thread while this one consumes it
/// as `process` does. With `--events`, it stops once everything produced has been read.
fn run_kafka(
    args: &RunArgs,
    pipeline: &PipelineSettings,
    config: GeneratorConfig,
    servers: &str,
) -> Result<ExitCode> {
    let topic = &args.consumer.topic;
    let consumer = args.consumer.settings(servers)?;
    let exposed = expose(&args.metrics, Some(RUN_METRICS_PORT), true, true)?;
    let storage = LocalStorage::open(&args.data_dir)?.observed_by(exposed.storage_observer());
    let storage = Arc::new(storage);
    let stop = stop_flag()?;
    ensure_topic(&consumer.cluster, topic, RUN_PARTITIONS, &stop)?;
    let drain = Arc::new(AtomicBool::new(false));
    introduce(args, &config, &format!(" through {topic} at {servers}"));
    let settings = ProducerSettings {
        cluster: consumer.cluster.clone(),
        topic: topic.clone(),
        key: KeyChoice::None,
    };
    let generator = {
        let (stop, drain) = (stop.clone(), drain.clone());
        let metrics = exposed.generator.clone();
        std::thread::spawn(move || {
            let produced = kafka::produce(&mut Generator::new(config), &settings, &stop, metrics);
            drain.store(true, Ordering::Relaxed);
            produced
        })
    };
    let started = Instant::now();
    let until = Until {
        stop: &stop,
        drain: &drain,
    };
    let consumed = consume_group(&consumer, pipeline, storage, &until, exposed.observed());
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
        args.data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn generate(args: GenerateArgs) -> Result<ExitCode> {
    let config = args.generator.settings(&GENERATE_DEFAULTS)?;
    let stop = stop_flag()?;
    let announce = |to: &str| {
        if config.simulated_start_ms.is_none() {
            tracing::info!("{}", report::generating(config.rate, config.events, to));
        }
    };
    match (&args.output, &args.kafka.bootstrap_servers) {
        (Some(path), _) if path == Path::new("-") => {
            announce("stdout");
            let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            match Generator::new(config).write_to(&mut out, &stop) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
                other => other.context("cannot write to stdout")?,
            }
        }
        (Some(path), _) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            announce(&path.display().to_string());
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let mut generator = Generator::new(config);
            generator
                .write_to(&mut out, &stop)
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!("wrote {} events to {}", generator.made(), path.display());
        }
        (None, Some(servers)) => {
            let kafka = &args.kafka;
            let cluster = kafka.security.cluster(servers)?;
            tracing::info!(
                "connecting to Kafka at {servers} ({})",
                cluster.security.describe()
            );
            ensure_topic(&cluster, &kafka.topic, kafka.partitions, &stop)?;
            let settings = ProducerSettings {
                cluster,
                topic: kafka.topic.clone(),
                key: kafka.key,
            };
            let exposed = expose(&args.metrics, None, false, true)?;
            exposed.health.set_connected(true);
            announce(&format!("{} at {servers}", kafka.topic));
            let mut generator = Generator::new(config);
            let produced = kafka::produce(&mut generator, &settings, &stop, exposed.generator)?;
            tracing::info!(
                "produced {} events to {} at {servers}",
                produced.delivered,
                kafka.topic
            );
        }
        (None, None) => unreachable!("clap requires --output or --bootstrap-servers"),
    }
    Ok(ExitCode::SUCCESS)
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

/// The parse-only limit: read lines and parse each with the validator's JSON parser.
fn parse_only(args: ParseOnlyArgs) -> Result<ExitCode> {
    let mut source = open_input(&args.input)?;
    let started = Instant::now();
    let (mut lines, mut objects) = (0u64, 0u64);
    loop {
        match source.poll(Duration::from_secs(1))? {
            Poll::Record(r) => {
                lines += 1;
                objects += u64::from(pageview::validate::parses(r.bytes));
            }
            Poll::Idle => {}
            Poll::End => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "parsed {lines} lines ({objects} JSON) in {secs:.2} s ({} lines/s)",
        report::human(lines as f64 / secs)
    );
    Ok(ExitCode::SUCCESS)
}

/// The consume-only limit: the processor's client and settings, reading every partition to
/// where it ended at start-up and doing nothing with the records.
fn consume_only(args: ConsumeOnlyArgs) -> Result<ExitCode> {
    // Manifests in an empty folder: every partition is read from its beginning.
    let scratch =
        std::env::temp_dir().join(format!("pageview-consume-only-{}", std::process::id()));
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(&scratch)?);
    let manifests = Arc::new(Manifests::new(storage, "consume-only", &args.kafka.group));
    let settings = args.kafka.settings(&args.bootstrap_servers)?;
    let group = GroupConsumer::join(&settings, manifests, &AtomicBool::new(false))?;
    let ends = group.ends()?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    // Per partition, the offset after the last record read.
    let mut read: Vec<i64> = Vec::new();
    let mut source = group.source();
    let done = |read: &[i64]| {
        ends.iter()
            .all(|&(p, end)| read.get(p as usize).is_some_and(|&r| r >= end))
    };
    while !done(&read) {
        match source.poll(Duration::from_millis(100)) {
            Polled::Record(record) => {
                records += 1;
                bytes += record.bytes.len() as u64;
                let p = record.origin.partition() as usize;
                if read.len() <= p {
                    read.resize(p + 1, 0);
                }
                read[p] = record.offset + 1;
            }
            Polled::Rebalanced(Rebalanced::Failed(e)) => return Err(e.into()),
            Polled::Fatal(e) => return Err(e.into()),
            Polled::Rebalanced(_) | Polled::Idle => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(source);
    group.leave();
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "consumed {records} records ({} MB) in {secs:.2} s ({} records/s)",
        bytes / 1_000_000,
        report::human(records as f64 / secs)
    );
    Ok(ExitCode::SUCCESS)
}
