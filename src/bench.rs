//! Generated inputs → timed `process` runs beside a parse-only run of the same file, with
//! wall time, CPU time and peak RSS of each child process.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::config::BenchArgs;
use crate::generate::{Generator, GeneratorConfig};
use crate::report::human;

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
    }
}

/// What one child process used.
struct Usage {
    wall: Duration,
    cpu: Duration,
    peak_rss_bytes: u64,
}

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

pub fn run(args: &BenchArgs) -> Result<()> {
    fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the pageview binary")?;
    println!(
        "| events | input MB | process s | events/s | MB/s | CPU s | events/s per CPU s | peak RSS MiB | parse-only s | parse-only events/s | processed/limit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &events in &args.sizes {
        let input = ensure_input(&args.dir, events)?;
        let input_bytes = fs::metadata(&input)?.len();
        let out = args.dir.join(format!("out-{events}"));
        let input = path_str(&input)?;
        let (mut limit, mut processed) = (None, None);
        // Alternating the two spreads any disturbance from the machine over both.
        for _ in 0..args.repeat {
            let run = measure(&exe, args.cpu, &["parse-only", "--input", input])?;
            limit = Some(Usage::fastest(limit, run));
            if out.exists() {
                fs::remove_dir_all(&out)
                    .with_context(|| format!("cannot clear {}", out.display()))?;
            }
            let storage = path_str(&out)?;
            let run = measure(
                &exe,
                args.cpu,
                &["process", "--input", input, "--storage", storage],
            )?;
            processed = Some(Usage::fastest(processed, run));
        }
        let (limit, processed) = (limit.expect("repeat >= 1"), processed.expect("repeat >= 1"));
        let secs = processed.wall.as_secs_f64();
        let limit_secs = limit.wall.as_secs_f64();
        println!(
            "| {} | {:.0} | {:.2} | {} | {:.0} | {:.2} | {} | {:.0} | {:.2} | {} | {:.2} |",
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
            limit_secs / secs,
        );
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
/// progress lines would only interleave with the table.
fn measure(exe: &Path, cpu: Option<u32>, args: &[&str]) -> Result<Usage> {
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
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; both out-pointers are valid.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
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
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Usage {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
    })
}
