//! `bench --s3`: each generated file processed to local disk and to S3 by child processes,
//! beside an upload-only loop that puts the same number of bytes through the same client
//! settings: what the storage allows. Processing to S3 should take about the longer of
//! processing to disk and uploading, since uploads overlap encoding.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Runs, Usage, clear, ensure_input, measure, parquet_files, path_str, table_header};
use crate::config::BenchArgs;
use crate::dataset::Dataset;
use crate::storage::{S3Settings, S3Storage, Storage};
use crate::tools::report::human;

pub fn run(args: &BenchArgs, exe: &Path) -> Result<()> {
    let settings = args.s3_args.settings()?;
    let buckets = args.buckets.resolve()?;
    let part_mib = (settings.part_size >> 20).to_string();
    let concurrency = settings.concurrency.to_string();
    let mut s3_flags = vec![
        "--storage",
        "s3",
        "--aws-region",
        &settings.region,
        "--s3-part-size-mib",
        &part_mib,
        "--s3-upload-concurrency",
        &concurrency,
    ];
    let bucket_flags: Vec<String> = Dataset::ALL
        .into_iter()
        .flat_map(|d| [d.bucket_flag(), buckets.of(d).to_string()])
        .collect();
    s3_flags.extend(bucket_flags.iter().map(String::as_str));
    if let Some(endpoint) = &settings.endpoint {
        s3_flags.extend(["--aws-endpoint-url", endpoint]);
    }
    eprintln!(
        "S3 at {}: parts of {part_mib} MiB, {concurrency} at once per file",
        settings.endpoint_name()
    );
    table_header(&[
        "events",
        "to disk s",
        "to S3 s",
        "to S3 events/s",
        "output MB",
        "upload-only s",
        "upload-only MB/s",
        "S3 ÷ max(disk, upload-only)",
    ]);
    let mut runs = Runs::rounds(args, 2);
    for &events in &args.sizes {
        let input = ensure_input(&args.dir, events)?;
        let input = path_str(&input)?;
        let out = args.dir.join(format!("out-s3-{events}"));
        let (mut disk, mut to_s3, mut upload) = (None, None, None::<Duration>);
        let mut bytes = 0;
        let size = human(events as f64);
        for _ in 0..args.repeat {
            clear(&out)?;
            let storage = path_str(&out)?;
            let run = runs.run(&format!("process {size} to disk"), events, || {
                measure(
                    exe,
                    args.cpu,
                    &["process", "--input", input, "--storage", storage],
                )
            })?;
            disk = Some(Usage::fastest(disk, run));
            bytes = parquet_files(&out)
                .iter()
                .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
                .sum();
            let mut process = vec!["process", "--input", input];
            process.extend_from_slice(&s3_flags);
            let run = runs.run(&format!("process {size} to S3"), events, || {
                measure(exe, args.cpu, &process)
            })?;
            to_s3 = Some(Usage::fastest(to_s3, run));
            let took = upload_only(&settings, buckets.of(Dataset::Raw), bytes)?;
            upload = Some(upload.map_or(took, |best| best.min(took)));
        }
        let (disk, to_s3) = (disk.expect("repeat >= 1"), to_s3.expect("repeat >= 1"));
        let upload = upload.expect("repeat >= 1").as_secs_f64();
        let (disk_s, s3_s) = (disk.wall.as_secs_f64(), to_s3.wall.as_secs_f64());
        println!(
            "| {} | {disk_s:.2} | {s3_s:.2} | {} | {:.0} | {upload:.2} | {:.0} | {:.2} |",
            human(events as f64),
            human(events as f64 / s3_s),
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / upload,
            s3_s / disk_s.max(upload),
        );
    }
    Ok(())
}

/// Time to upload `bytes` as one file, published as the pipeline publishes, then removed.
fn upload_only(settings: &S3Settings, bucket: &str, bytes: u64) -> Result<Duration> {
    let storage = S3Storage::open(settings, &[bucket], None)?;
    // Incompressible and unlike any page, though nothing on the way compresses.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let key = format!("{bucket}/_bench/upload-only");
    let started = Instant::now();
    let mut file = storage.create(bucket)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.publish(&key)?;
    let took = started.elapsed();
    storage.delete(&key)?;
    Ok(took)
}
