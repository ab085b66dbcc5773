//! The limits `bench` measures the pipeline against: parsing only, and consuming only.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::commit::Manifests;
use crate::config::{ConsumeOnlyArgs, ParseOnlyArgs};
use crate::decode::{LineCutter, Lines};
use crate::source::kafka::{ConsumerSettings, GroupConsumer};
use crate::source::{Decoded, Poll, READ_CHUNK, Source};
use crate::storage::{LocalStorage, Storage};
use crate::tools::report;

/// Read lines and parse each with the validator's JSON parser, on one thread: the limit of
/// one core.
pub struct ParseOnlyPlan {
    pub args: ParseOnlyArgs,
}

impl ParseOnlyPlan {
    pub fn execute(self) -> Result<ExitCode> {
        let path = &self.args.input;
        let mut input: Box<dyn Read> = if path == Path::new("-") {
            Box::new(io::stdin().lock())
        } else {
            Box::new(
                File::open(path)
                    .with_context(|| format!("cannot open input {}", path.display()))?,
            )
        };
        let started = Instant::now();
        let (mut lines, mut objects) = (0u64, 0u64);
        let mut cutter = LineCutter::default();
        loop {
            let (chunk, ended) = cutter
                .read(&mut input, READ_CHUNK)
                .with_context(|| format!("cannot read input {}", path.display()))?;
            for line in chunk.iter().flat_map(Lines::each) {
                lines += 1;
                objects += u64::from(crate::validate::parses(line));
            }
            if ended {
                break;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "parsed {lines} lines ({objects} JSON) in {secs:.2} s ({} lines/s)",
            report::human(lines as f64 / secs)
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// The processor's client and settings, reading every partition to where it ended at
/// start-up and doing nothing with the records.
pub struct ConsumeOnlyPlan {
    settings: ConsumerSettings,
}

impl ConsumeOnlyPlan {
    pub fn new(args: ConsumeOnlyArgs) -> Result<Self> {
        Ok(ConsumeOnlyPlan {
            settings: args.kafka.settings(&args.bootstrap_servers)?,
        })
    }

    pub fn execute(self) -> Result<ExitCode> {
        // Manifests in an empty folder: every partition is read from its beginning.
        let scratch =
            std::env::temp_dir().join(format!("pageview-consume-only-{}", std::process::id()));
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(&scratch)?);
        let manifests = Arc::new(Manifests::new(
            storage,
            "consume-only",
            &self.settings.group,
            &self.settings.topic,
        ));
        let mut group = GroupConsumer::join(&self.settings, manifests, &AtomicBool::new(false))?;
        let ends = group.ends()?;
        let started = Instant::now();
        let (mut records, mut bytes) = (0u64, 0u64);
        // Per partition, the offset after the last record read.
        let mut read: Vec<i64> = Vec::new();
        let done = |read: &[i64]| {
            ends.iter()
                .all(|&(p, end)| read.get(p as usize).is_some_and(|&r| r >= end))
        };
        while !done(&read) {
            if let Poll::Record(Decoded { record, .. }) = group.poll(Duration::from_millis(100))? {
                records += 1;
                bytes += record.bytes.len() as u64;
                let p = record.origin.partition() as usize;
                if read.len() <= p {
                    read.resize(p + 1, 0);
                }
                read[p] = record.offset + 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        group.leave();
        let _ = std::fs::remove_dir_all(&scratch);
        println!(
            "consumed {records} records ({} MB) in {secs:.2} s ({} records/s)",
            bytes / 1_000_000,
            report::human(records as f64 / secs)
        );
        Ok(ExitCode::SUCCESS)
    }
}
