//! Generated inputs → timed `process` runs beside a parse-only run of the same file (or, with
//! `--kafka`, beside a consume-only run of the same topic), with wall time, CPU time and
//! memory of each child process.

use std::fs::{self, File};
use std::io::{BufWriter, IsTerminal};
use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::config::BenchArgs;
use crate::generate::{Generator, GeneratorConfig};
use crate::kafka::{self, Cluster, KeyChoice, ProducerSettings};
use crate::tools::report::{self, human};
use crate::workers::available_cores;

mod latency;
mod s3;

/// The benchmark input: one simulated day of traffic per ~86M events, with the messiness of
/// real input (1% malformed, 0.1% late, 2 s of disorder).
fn input_config(events: u64) -> GeneratorConfig {
    GeneratorConfig {
        rate: 1000.0,
        events: Some(events),
        seed: 42,
        malformed_share: 0.01,
        late_share: 0.001,
        jitter_ms: 2000,
        simulated_start_ms: Some(1_700_000_000_000),
        speedup: None,
    }
}

/// What one child process used.
struct Usage {
    wall: Duration,
    cpu: Duration,
    peak_rss_bytes: u64,
    /// Resident memory every [`RSS_EVERY`] while it ran.
    rss_samples: Vec<u64>,
}

pub(super) const RSS_EVERY: Duration = Duration::from_millis(200);

impl Usage {
    /// The faster run's times, with the highest peak RSS of all runs.
    fn fastest(best: Option<Usage>, run: Usage) -> Usage {
        match best {
            None => run,
            Some(best) => {
                let peak_rss_bytes = best.peak_rss_bytes.max(run.peak_rss_bytes);
                let faster = if run.wall < best.wall { run } else { best };
                Usage {
                    peak_rss_bytes,
                    ..faster
                }
            }
        }
    }
}

/// Where a benchmark is, on stderr while its children run with their own output discarded:
/// a bar with the time left, redrawn twice a second on a terminal, and a plain line per child
/// otherwise. Work is counted in events read, so a 10M run weighs as ten 1M runs.
pub(super) struct Runs {
    total: u64,
    done: u64,
    started: Instant,
    terminal: bool,
}

/// Cells of the progress bar on a terminal.
const BAR_WIDTH: usize = 20;
const REDRAW_EVERY: Duration = Duration::from_millis(500);

impl Runs {
    /// Every size is read by `children` children per round: those measured and the one they
    /// are compared with.
    pub(super) fn rounds(args: &BenchArgs, children: usize) -> Self {
        Runs {
            total: args.sizes.iter().sum::<u64>() * children as u64 * u64::from(args.repeat),
            done: 0,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Runs `child`, which reads `events` events; `what` names it (`process 10M`).
    pub(super) fn run<T>(
        &mut self,
        what: &str,
        events: u64,
        child: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let width = if self.terminal { BAR_WIDTH } else { 0 };
        let of = format!("{} events' work", human(self.total as f64));
        let head = format!(
            "bench: {} | {what}",
            report::progress(self.done, self.total, &of, rate, width)
        );
        let result = if self.terminal {
            let stop = Arc::new(AtomicBool::new(false));
            let ticker = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        eprint!("\r\x1b[2K{head}, {:.0} s", started.elapsed().as_secs_f64());
                        std::thread::park_timeout(REDRAW_EVERY);
                    }
                    eprint!("\r\x1b[2K");
                })
            };
            let result = child();
            stop.store(true, Ordering::Relaxed);
            ticker.thread().unpark();
            let _ = ticker.join();
            result
        } else {
            eprintln!("{head}");
            child()
        };
        self.done += events;
        result
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the pageview binary")?;
    match &args.kafka {
        Some(servers) if !args.latency_rates.is_empty() => return run_latency(args, &exe, servers),
        Some(servers) => return run_kafka(args, &exe, servers),
        None if args.s3 => return s3::run(args, &exe),
        None => {}
    }
    let threads = thread_counts(&args.threads);
    println!(
        "process with {} worker threads; parse-only on one; cores available: {}\n",
        threads
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        available_cores()
    );
    table_header(&[
        "events",
        "threads",
        "input MB",
        "process s",
        "events/s",
        "MB/s",
        "CPU s",
        "events/s per CPU s",
        "peak RSS MiB",
        "parse-only s",
        "parse-only events/s",
        "processed/limit per CPU s",
    ]);
    let mut runs = Runs::rounds(args, 1 + threads.len());
    for &events in &args.sizes {
        let input = ensure_input(&args.dir, events)?;
        let input_bytes = fs::metadata(&input)?.len();
        let out = args.dir.join(format!("out-{events}"));
        let input = path_str(&input)?;
        let mut limit = None;
        let mut processed: Vec<Option<Usage>> = threads.iter().map(|_| None).collect();
        // Taking turns spreads any disturbance from the machine over every measurement.
        let size = human(events as f64);
        for _ in 0..args.repeat {
            let run = runs.run(&format!("parse-only {size}"), events, || {
                measure(&exe, args.cpu, &["parse-only", "--input", input])
            })?;
            limit = Some(Usage::fastest(limit, run));
            for (&n, best) in threads.iter().zip(&mut processed) {
                clear(&out)?;
                let storage = path_str(&out)?;
                let n = n.to_string();
                let run = runs.run(&format!("process {size} --threads {n}"), events, || {
                    let process = [
                        "process",
                        "--input",
                        input,
                        "--storage",
                        storage,
                        "--threads",
                        &n,
                    ];
                    measure(&exe, args.cpu, &process)
                })?;
                *best = Some(Usage::fastest(best.take(), run));
            }
        }
        let limit = limit.expect("repeat >= 1");
        let limit_secs = limit.wall.as_secs_f64();
        for (n, processed) in threads.iter().zip(processed) {
            let processed = processed.expect("repeat >= 1");
            let secs = processed.wall.as_secs_f64();
            println!(
                "| {} | {n} | {:.0} | {:.2} | {} | {:.0} | {:.2} | {} | {:.0} | {:.2} | {} | {:.2} |",
                human(events as f64),
                input_bytes as f64 / 1e6,
                secs,
                human(events as f64 / secs),
                input_bytes as f64 / 1e6 / secs,
                processed.cpu.as_secs_f64(),
                human(events as f64 / processed.cpu.as_secs_f64()),
                processed.peak_rss_bytes as f64 / (1 << 20) as f64,
                limit_secs,
                human(events as f64 / limit_secs),
                limit.cpu.as_secs_f64() / processed.cpu.as_secs_f64(),
            );
        }
    }
    Ok(())
}

/// The thread counts to time: those asked for, else one and the cores available.
fn thread_counts(asked: &[NonZero<usize>]) -> Vec<usize> {
    let mut counts: Vec<usize> = if asked.is_empty() {
        vec![1, available_cores().get()]
    } else {
        asked.iter().map(|n| n.get()).collect()
    };
    counts.dedup();
    counts
}

/// Per size: the input produced once to a new topic, then alternately a consume-only child
/// and `process --stop-at-end`, each in a group of its own so each reads the whole topic.
fn run_kafka(args: &BenchArgs, exe: &Path, servers: &str) -> Result<()> {
    if args.processors > 1 {
        println!(
            "process: {} processors of one group, started together; CPU summed, RSS the highest\n",
            args.processors
        );
    }
    table_header(&[
        "events",
        "consume-only s",
        "consume-only events/s",
        "process s",
        "events/s",
        "CPU s",
        "peak RSS MiB",
        "RSS at ¼, ½, ¾ of the run MiB",
        "processed/limit",
    ]);
    let mut runs = Runs::rounds(args, 2);
    for &events in &args.sizes {
        let topic = format!("pageview-bench-{events}-{}", crate::generate::now_ms());
        kafka::ensure_topic(
            &Cluster::plaintext(servers),
            &topic,
            3,
            &AtomicBool::new(false),
        )?;
        eprintln!("producing {} events to {topic} …", human(events as f64));
        let settings = ProducerSettings {
            cluster: Cluster::plaintext(servers),
            topic: topic.clone(),
            key: KeyChoice::None,
        };
        kafka::produce(
            &mut Generator::new(input_config(events)),
            &settings,
            &AtomicBool::new(false),
            None,
        )?;
        let out = args.dir.join(format!("out-kafka-{events}"));
        let (mut limit, mut processed) = (None, None);
        for round in 0..args.repeat {
            let group = |what| format!("{topic}-{what}-{round}");
            let consumer = ["--bootstrap-servers", servers, "--topic", &topic, "--group"];
            let mut consume = vec!["consume-only"];
            consume.extend_from_slice(&consumer);
            let consume_group = group("consume");
            consume.push(&consume_group);
            let size = human(events as f64);
            let run = runs.run(&format!("consume-only {size}"), events, || {
                measure(exe, args.cpu, &consume)
            })?;
            limit = Some(Usage::fastest(limit, run));
            clear(&out)?;
            let mut process = vec!["process", "--stop-at-end", "--storage", path_str(&out)?];
            process.extend_from_slice(&consumer);
            let process_group = group("process");
            process.push(&process_group);
            let copies = args.processors as usize;
            let run = runs.run(&format!("process {size}"), events, || {
                measure_copies(exe, args.cpu, &process, copies)
            })?;
            processed = Some(Usage::fastest(processed, run));
        }
        let (limit, processed) = (limit.expect("repeat >= 1"), processed.expect("repeat >= 1"));
        let (secs, limit_secs) = (processed.wall.as_secs_f64(), limit.wall.as_secs_f64());
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let samples = &processed.rss_samples;
        let at = |quarter: usize| {
            samples
                .get(samples.len() * quarter / 4)
                .map_or(0.0, |&b| mib(b))
        };
        println!(
            "| {} | {limit_secs:.2} | {} | {secs:.2} | {} | {:.2} | {:.0} | {:.0}, {:.0}, {:.0} | {:.2} |",
            human(events as f64),
            human(events as f64 / limit_secs),
            human(events as f64 / secs),
            processed.cpu.as_secs_f64(),
            mib(processed.peak_rss_bytes),
            at(1),
            at(2),
            at(3),
            limit_secs / secs,
        );
    }
    Ok(())
}

fn run_latency(args: &BenchArgs, exe: &Path, servers: &str) -> Result<()> {
    table_header(&[
        "events/s",
        "processors",
        "windows",
        "latency p50 ms",
        "latency max ms",
        "clock confirms p50 ms",
        "raw rows",
        "raw row p50 ms",
        "raw row p99 ms",
        "RSS min–max under load MiB",
    ]);
    for &rate in &args.latency_rates {
        eprintln!(
            "measuring {} windows of {} s at {rate} events/s, {} processor(s) …",
            args.latency_windows, args.latency_window_seconds, args.processors
        );
        let measured = latency::measure(
            exe,
            servers,
            rate,
            (args.latency_windows as usize, args.latency_window_seconds),
            args.processors as usize,
            &args.dir,
        )?;
        let mut ms: Vec<u128> = measured.windows.iter().map(|d| d.as_millis()).collect();
        ms.sort_unstable();
        let mut confirm: Vec<u128> = measured
            .confirmations
            .iter()
            .map(|d| d.as_millis())
            .collect();
        confirm.sort_unstable();
        let mut raw = measured.raw_rows;
        raw.sort_unstable();
        let raw_at = |q: f64| {
            raw.get(((raw.len() as f64 * q) as usize).min(raw.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        let mib = |bytes: Option<&u64>| bytes.map_or(0.0, |&b| b as f64 / (1 << 20) as f64);
        // From its second second on: the first is start-up, not load.
        let loaded = measured.rss_samples.get(5..).unwrap_or_default();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}–{:.0} |",
            human(rate),
            args.processors,
            ms.len(),
            ms.get(ms.len() / 2).copied().unwrap_or_default(),
            ms.last().copied().unwrap_or_default(),
            confirm.get(confirm.len() / 2).copied().unwrap_or_default(),
            raw.len(),
            raw_at(0.5),
            raw_at(0.99),
            mib(loaded.iter().min()),
            mib(loaded.iter().max()),
        );
    }
    Ok(())
}

/// Every Parquet file under `dir`, at any depth: what a run wrote.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

/// Removes what an earlier run left in an output folder.
fn clear(out: &Path) -> Result<()> {
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Generates the input for `events` once; later runs reuse it.
fn ensure_input(dir: &Path, events: u64) -> Result<PathBuf> {
    let path = dir.join(format!("events-{events}.jsonl"));
    if path.exists() {
        return Ok(path);
    }
    let partial = dir.join(format!("events-{events}.jsonl.partial"));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&partial)?);
    eprintln!(
        "generating {} events into {} …",
        human(events as f64),
        path.display()
    );
    Generator::new(input_config(events)).write_to(&mut out, &AtomicBool::new(false))?;
    drop(out);
    fs::rename(&partial, &path)?;
    Ok(path)
}

/// Runs `exe args…` to completion (pinned to one CPU if asked), its output discarded: its
/// progress lines would only interleave with the table (`Runs` shows the benchmark's).
fn measure(exe: &Path, cpu: Option<u32>, args: &[&str]) -> Result<Usage> {
    measure_copies(exe, cpu, args, 1)
}

/// Runs `copies` of `exe args…` at once until every one has ended: the wall time until the
/// last ends, their CPU time together, the highest peak of any one and the first one's RSS
/// over time.
fn measure_copies(exe: &Path, cpu: Option<u32>, args: &[&str], copies: usize) -> Result<Usage> {
    let started = Instant::now();
    let mut pids = Vec::with_capacity(copies);
    for _ in 0..copies {
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        pids.push(child.id() as libc::pid_t);
    }
    let sampler = sample_rss(pids[0]);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let (mut cpu_time, mut peak_rss_bytes) = (Duration::ZERO, 0);
    for pid in pids {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not yet waited for; both out-pointers are valid.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc != pid {
            bail!(
                "cannot wait for {}: {}",
                exe.display(),
                std::io::Error::last_os_error()
            );
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("`pageview {}` failed (status {status})", args.join(" "));
        }
        cpu_time += tv(usage.ru_utime) + tv(usage.ru_stime);
        peak_rss_bytes = peak_rss_bytes.max(usage.ru_maxrss as u64 * 1024);
    }
    let wall = started.elapsed();
    Ok(Usage {
        wall,
        cpu: cpu_time,
        peak_rss_bytes,
        rss_samples: sampler.join().unwrap_or_default(),
    })
}

/// Reads the resident memory of `pid` every [`RSS_EVERY`] until the process is gone.
pub(super) fn sample_rss(pid: libc::pid_t) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let status = format!("/proc/{pid}/status");
        let mut samples = Vec::new();
        // Once waited for, the process's status file is gone (or is a zombie's, without
        // VmRSS): either ends the loop.
        while let Some(kib) = fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            // Zero while the child is still being exec'd.
            if kib > 0 {
                samples.push(kib * 1024);
            }
            std::thread::sleep(RSS_EVERY);
        }
        samples
    })
}

/// Prints a Markdown table's header row and the separator row that matches it.
fn table_header(columns: &[&str]) {
    println!("| {} |", columns.join(" | "));
    println!("|{}", "---|".repeat(columns.len()));
}
