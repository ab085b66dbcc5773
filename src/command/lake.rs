//! The commands on the lake itself: `buckets create`, `inspect` and `vacuum`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::Lake;
use crate::commit::{added_before, expire, group_progress, has_table, vacuum};
use crate::config::{BucketsCreateArgs, CompactArgs, InspectArgs, TableFormat, VacuumArgs};
use crate::sink::Dataset;
use crate::storage::{Buckets, S3Settings, StorageError, buckets};
use crate::tools::inspect::{GroupReport, Request};

pub struct BucketsPlan {
    s3: S3Settings,
    buckets: Buckets,
    /// `None` for Delta tables, whose files only the table's log may remove.
    dlq_retention_days: Option<u32>,
}

impl BucketsPlan {
    pub fn new(args: BucketsCreateArgs) -> Result<Self> {
        Ok(BucketsPlan {
            s3: args.s3.settings()?,
            buckets: args.buckets.resolve()?,
            dlq_retention_days: (args.table_format == TableFormat::Parquet)
                .then_some(args.dlq.dlq_retention_days),
        })
    }

    pub fn summary(&self) -> String {
        let names = self.buckets.with_checkpoints();
        let (last, rest) = names
            .split_last()
            .expect("the checkpoints' bucket at least");
        format!(
            "create {} and {last} at {}",
            rest.join(", "),
            self.s3.endpoint_name()
        )
    }

    pub fn execute(self) -> Result<ExitCode> {
        let plan = buckets::plan(&self.buckets, self.dlq_retention_days);
        for (name, outcome) in buckets::create(&self.s3, &plan)? {
            let what = match outcome {
                buckets::Outcome::Created => "created",
                buckets::Outcome::Existed => "exists; settings and rules applied again",
            };
            println!("{name}: {what}");
        }
        let dead_letters = match self.dlq_retention_days {
            Some(days) => format!("dead letters expire after {days} days"),
            None => "dead letters are kept (S3 must not delete a Delta table's files)".into(),
        };
        println!(
            "lifecycle: raw and aggregated data files (dt=…) to Glacier after {} days, Delta logs never; {dead_letters}",
            buckets::ARCHIVE_AFTER_DAYS,
        );
        Ok(ExitCode::SUCCESS)
    }
}

pub struct InspectPlan {
    lake: Lake,
    buckets: Buckets,
    request: Request,
    group: String,
    topic: String,
}

impl InspectPlan {
    pub fn new(args: InspectArgs) -> Result<Self> {
        let buckets = args.lake.buckets.resolve()?;
        Ok(InspectPlan {
            lake: Lake::new(args.lake.storage, &args.lake.s3)?,
            buckets,
            request: Request {
                windows: args.windows as usize,
                window_at: args.window,
                samples: args.samples as usize,
            },
            group: args.group,
            topic: args.topic,
        })
    }

    pub fn summary(&self) -> String {
        format!("inspect {}", self.lake)
    }

    /// Reads what is there and changes nothing, so a folder must already exist.
    pub fn execute(self) -> Result<ExitCode> {
        if let Lake::Local(root) = &self.lake {
            written_folder(root)?;
        }
        let checkpoints = &self.buckets.checkpoints;
        // Bounded runs alone need no checkpoints bucket: then there is no group to show.
        let (storage, grouped) = match self.lake.open(&self.buckets.with_checkpoints(), None) {
            Ok(storage) => (storage, true),
            Err(e) if matches!(e.downcast_ref(), Some(StorageError::NoBucket { bucket, .. }) if bucket == checkpoints) => {
                (self.lake.open(&self.buckets.datasets(), None)?, false)
            }
            Err(e) => return Err(e),
        };
        let tables = self.lake.table_root(&*storage);
        let inspection =
            crate::tools::inspect::inspect(&storage, &self.buckets, &self.request, &tables)?;
        let progress = if grouped {
            let aggregated = self.buckets.of(Dataset::Aggregated);
            group_progress(
                storage.clone(),
                checkpoints,
                &self.group,
                &self.topic,
                &tables,
                aggregated,
            )?
        } else {
            None
        };
        println!("{}\n", self.lake);
        print!("{inspection}");
        if let Some(progress) = progress {
            print!("\n{}", GroupReport(&progress));
        }
        Ok(ExitCode::SUCCESS)
    }
}

pub struct VacuumPlan {
    lake: Lake,
    buckets: Buckets,
    retention_days: u32,
    dlq_retention: Duration,
}

impl VacuumPlan {
    pub fn new(args: VacuumArgs) -> Result<Self> {
        Ok(VacuumPlan {
            lake: Lake::new(args.lake.storage, &args.lake.s3)?,
            buckets: args.lake.buckets.resolve()?,
            retention_days: args.retention_days,
            dlq_retention: args.dlq.retention(),
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "vacuum the tables in {}, keeping {} days (dead letters: {} days)",
            self.lake,
            self.retention_days,
            self.dlq_retention.as_secs() / 86_400
        )
    }

    pub fn execute(self) -> Result<ExitCode> {
        if let Lake::Local(root) = &self.lake {
            written_folder(root)?;
        }
        let storage = self.lake.open(&self.buckets.datasets(), None)?;
        let tables = self.lake.table_root(&*storage);
        let before_ms = added_before(self.dlq_retention);
        let dlq = self.buckets.of(Dataset::Dlq);
        if let Some(expired) = expire(&tables, dlq, before_ms)? {
            println!(
                "{dlq}: removed {expired} files of dead letters older than {} days from the table",
                self.dlq_retention.as_secs() / 86_400
            );
        }
        for dataset in Dataset::ALL {
            let bucket = self.buckets.of(dataset);
            match vacuum(&tables, bucket, self.retention_days)? {
                Some(deleted) => println!(
                    "{bucket}: deleted {} files no version of the last {} days needs",
                    deleted.len(),
                    self.retention_days
                ),
                None => println!("{bucket}: not a Delta table; nothing to do"),
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A command that only reads or tidies what was written needs the folder to exist already:
/// creating it would hide a mistyped path.
fn written_folder(root: &Path) -> Result<()> {
    if !root.is_dir() {
        anyhow::bail!(
            "{} is not a folder: nothing was written there (give the folder `run \
             --data-dir` or `process --storage` wrote to)",
            root.display()
        );
    }
    Ok(())
}

pub struct CompactPlan {
    lake: Lake,
    buckets: Buckets,
    target_bytes: u64,
    compression: parquet::basic::Compression,
}

impl CompactPlan {
    pub fn new(args: CompactArgs) -> Result<Self> {
        Ok(CompactPlan {
            lake: Lake::new(args.lake.storage.clone(), &args.lake.s3)?,
            buckets: args.lake.buckets.resolve()?,
            target_bytes: args.target.bytes(),
            compression: args.compression(),
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "compact the tables in {} into files of up to {} MiB",
            self.lake,
            self.target_bytes >> 20
        )
    }

    pub fn execute(self) -> Result<ExitCode> {
        if let Lake::Local(root) = &self.lake {
            written_folder(root)?;
        }
        let storage = self.lake.open(&self.buckets.datasets(), None)?;
        let root = self.lake.table_root(&*storage);
        let mut missing = Vec::new();
        for dataset in Dataset::ALL {
            let bucket = self.buckets.of(dataset);
            if !has_table(&root, bucket)? {
                missing.push(bucket);
            }
        }
        if !missing.is_empty() {
            anyhow::bail!(
                "no Delta table in {} of {}: `compact` works on the tables a run with \
                 --table-format delta writes (nothing was changed)",
                missing.join(", "),
                self.lake
            );
        }
        let mut tables = self.lake.open_tables(&self.buckets, &*storage)?;
        for dataset in Dataset::ALL {
            let bucket = self.buckets.of(dataset);
            let (removed, added) =
                tables.compact(dataset, &*storage, self.compression, self.target_bytes)?;
            println!("{bucket}: {removed} small files rewritten into {added}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
