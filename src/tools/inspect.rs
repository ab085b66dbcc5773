//! What the pipeline wrote (a folder or S3) → a summary to read: per dataset the files, rows
//! and bytes; the latest windows with their counts per postcode; dead letters by reason with
//! sample payloads. Reads the Parquet itself, through `Storage`: footers for row counts, and
//! only the aggregated and dead-letter files' columns.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use crate::commit::{GroupProgress, TableError, TableRoot, current_files};
use crate::sink::{Dataset, naming};
use crate::storage::{Buckets, Listed, Storage, StorageError};
use crate::tools::report::{grouped, size};

/// What to show.
#[derive(Debug, Clone)]
pub struct Request {
    /// How many of the latest windows.
    pub windows: usize,
    /// Only the window holding this time (ms), with every postcode.
    pub window_at: Option<i64>,
    /// Payloads shown per dead-letter reason.
    pub samples: usize,
}

/// Postcodes shown per window, unless one window is asked for.
const POSTCODES_SHOWN: usize = 10;
/// A sample payload is cut to this many characters.
const SAMPLE_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{key} is not a readable {dataset} file: {source}")]
    Unreadable {
        dataset: Dataset,
        key: String,
        source: ParquetError,
    },
    #[error("no window holds {at}: {written}")]
    NoWindow { at: String, written: String },
    #[error(transparent)]
    Table(#[from] TableError),
}

/// What a dataset's files are: every Parquet file in its bucket, or for a Delta table the
/// files of its current version (`tables`: where the buckets' tables would be).
fn files_of(
    storage: &Arc<dyn Storage>,
    bucket: &str,
    tables: &TableRoot<'_>,
) -> Result<Vec<Listed>, InspectError> {
    if let Some(files) = current_files(tables, bucket)? {
        return Ok(files);
    }
    Ok(storage
        .list_files(bucket)?
        .into_iter()
        .filter(|f| f.path.ends_with(".parquet"))
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    pub dataset: Dataset,
    pub bucket: String,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    /// The first and last partition (`dt=…`), in path order; none when unpartitioned.
    pub partitions: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    /// Most events first, ties by postcode; rows of one postcode in several files (one per
    /// member of a consumer group) are added up.
    pub counts: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub kind: String,
    pub count: u64,
    pub samples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub datasets: Vec<DatasetSummary>,
    /// Newest first.
    pub windows: Vec<Window>,
    /// All postcodes of each window are shown, not only the busiest.
    pub every_postcode: bool,
    /// Most dead letters first.
    pub reasons: Vec<Reason>,
}

/// Reads what `buckets` hold in `storage`; a bucket holding a Delta table (where `tables`
/// says) is read through the table's log.
pub fn inspect(
    storage: &Arc<dyn Storage>,
    buckets: &Buckets,
    request: &Request,
    tables: &TableRoot<'_>,
) -> Result<Inspection, InspectError> {
    let mut datasets = Vec::new();
    // The aggregated and dead-letter files, footers read, to read their columns next.
    let mut opened = Vec::new();
    for dataset in Dataset::ALL {
        let bucket = buckets.of(dataset).to_string();
        let files = files_of(storage, &bucket, tables)?;
        let mut summary = DatasetSummary {
            dataset,
            bucket: bucket.clone(),
            files: files.len() as u64,
            rows: 0,
            bytes: files.iter().map(|f| f.bytes).sum(),
            partitions: files
                .first()
                .zip(files.last())
                .map(|(a, b)| (partition_of(&a.path).into(), partition_of(&b.path).into()))
                .filter(|(first, _): &(String, String)| !first.is_empty()),
        };
        let mut kept = Vec::new();
        for file in &files {
            let parquet = open(storage, dataset, &bucket, file)?;
            summary.rows += parquet.rows();
            if dataset != Dataset::Raw {
                kept.push((file.path.clone(), parquet));
            }
        }
        datasets.push(summary);
        opened.push(kept);
    }
    let dlq = opened.pop().expect("opened per dataset");
    let aggregated = opened.pop().expect("opened per dataset");
    let windows = latest_windows(&aggregated, request)?;
    let reasons = dead_letters(&dlq, request.samples)?;
    Ok(Inspection {
        datasets,
        windows,
        every_postcode: request.window_at.is_some(),
        reasons,
    })
}

/// `dt=…/event_hour=…` of `dt=…/event_hour=…/part-….parquet`.
fn partition_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(partition, _)| partition)
}

/// The windows asked for: the window holding `window_at`, or the latest `windows`. Reads the
/// aggregated files a day partition at a time, newest first, until it has enough.
fn latest_windows(
    files: &[(String, ParquetObject)],
    request: &Request,
) -> Result<Vec<Window>, InspectError> {
    let mut days: BTreeMap<&str, Vec<&ParquetObject>> = BTreeMap::new();
    for (path, file) in files {
        days.entry(partition_of(path)).or_default().push(file);
    }
    let mut counts = WindowCounts::default();
    if let Some(at) = request.window_at {
        // A window holding `at` starts at most a day (the longest window) before it.
        let wanted = [
            naming::date_partition(at),
            naming::date_partition(at - DAY_MS),
        ];
        for (_, day) in days.iter().filter(|(d, _)| wanted.iter().any(|w| w == *d)) {
            counts.read(day)?;
        }
        return match counts.holding(at) {
            Some(window) => Ok(vec![window]),
            None => Err(InspectError::NoWindow {
                at: utc(at),
                written: match days.first_key_value().zip(days.last_key_value()) {
                    Some(((first, _), (last, _))) if first == last => {
                        format!("windows were written for {first} only")
                    }
                    Some(((first, _), (last, _))) => {
                        format!("windows were written for {first} … {last}")
                    }
                    None => "no window was written".into(),
                },
            }),
        };
    }
    for (_, day) in days.iter().rev() {
        if counts.len() >= request.windows {
            break;
        }
        counts.read(day)?;
    }
    Ok(counts.latest(request.windows))
}

const DAY_MS: i64 = 24 * 3_600_000;

/// Aggregated rows added up per window and postcode.
#[derive(Debug, Default)]
struct WindowCounts(BTreeMap<i64, (i64, BTreeMap<String, i64>)>);

impl WindowCounts {
    fn read(&mut self, files: &[&ParquetObject]) -> Result<(), InspectError> {
        for file in files {
            for batch in file.read(&["window_start", "window_end", "postcode", "pageview_count"])? {
                let starts = batch.column(0).as_primitive::<TimestampMillisecondType>();
                let ends = batch.column(1).as_primitive::<TimestampMillisecondType>();
                let postcodes = batch.column(2).as_string::<i32>();
                let counts = batch.column(3).as_primitive::<Int64Type>();
                for i in 0..batch.num_rows() {
                    self.add(
                        starts.value(i),
                        ends.value(i),
                        postcodes.value(i),
                        counts.value(i),
                    );
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, start: i64, end: i64, postcode: &str, count: i64) {
        let (_, postcodes) = self.0.entry(start).or_insert((end, BTreeMap::new()));
        *postcodes.entry(postcode.to_string()).or_default() += count;
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn window(start: i64, (end, postcodes): &(i64, BTreeMap<String, i64>)) -> Window {
        let mut counts: Vec<(String, i64)> =
            postcodes.iter().map(|(p, n)| (p.clone(), *n)).collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Window {
            start,
            end: *end,
            counts,
        }
    }

    fn holding(&self, at: i64) -> Option<Window> {
        let (start, window) = self.0.range(..=at).next_back()?;
        (at < window.0).then(|| Self::window(*start, window))
    }

    /// The newest `n`, newest first.
    fn latest(&self, n: usize) -> Vec<Window> {
        self.0
            .iter()
            .rev()
            .take(n)
            .map(|(start, window)| Self::window(*start, window))
            .collect()
    }
}

/// Dead letters counted by reason, with the first `samples` payloads of each in path order.
/// A file's payloads are read only while a reason in it still lacks samples: the first few
/// files usually supply them all, and the payload is most of a dead letter's bytes.
fn dead_letters(
    files: &[(String, ParquetObject)],
    samples: usize,
) -> Result<Vec<Reason>, InspectError> {
    let mut reasons: BTreeMap<String, Reason> = BTreeMap::new();
    for (_, file) in files {
        let batches = file.read(&["error_kind"])?;
        let mut wanting = false;
        for batch in &batches {
            for kind in batch.column(0).as_string::<i32>().iter().flatten() {
                let reason = reasons.entry(kind.to_string()).or_insert_with(|| Reason {
                    kind: kind.to_string(),
                    count: 0,
                    samples: Vec::new(),
                });
                reason.count += 1;
                wanting |= reason.samples.len() < samples;
            }
        }
        if wanting {
            for batch in file.read(&["error_kind", "payload"])? {
                let kinds = batch.column(0).as_string::<i32>();
                let payloads = batch.column(1).as_binary::<i32>();
                for i in 0..batch.num_rows() {
                    let reason = reasons.get_mut(kinds.value(i)).expect("counted above");
                    if reason.samples.len() < samples {
                        reason.samples.push(sample(payloads.value(i)));
                    }
                }
            }
        }
    }
    let mut reasons: Vec<Reason> = reasons.into_values().collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    Ok(reasons)
}

/// A payload as one printable line: control characters escaped, invalid UTF-8 shown as
/// U+FFFD, cut short.
fn sample(payload: &[u8]) -> String {
    let mut line = String::new();
    for (i, c) in String::from_utf8_lossy(payload).chars().enumerate() {
        if i == SAMPLE_CHARS {
            line.push('…');
            break;
        }
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// One Parquet file in storage, its footer read.
struct ParquetObject {
    object: Object,
    dataset: Dataset,
    metadata: ArrowReaderMetadata,
}

fn open(
    storage: &Arc<dyn Storage>,
    dataset: Dataset,
    bucket: &str,
    file: &Listed,
) -> Result<ParquetObject, InspectError> {
    let object = Object {
        storage: storage.clone(),
        key: format!("{bucket}/{}", file.path),
        size: file.bytes,
    };
    let metadata = ArrowReaderMetadata::load(&object, ArrowReaderOptions::default())
        .map_err(|source| object.unreadable(dataset, source))?;
    Ok(ParquetObject {
        object,
        dataset,
        metadata,
    })
}

impl ParquetObject {
    fn rows(&self) -> u64 {
        self.metadata.metadata().file_metadata().num_rows().max(0) as u64
    }

    /// The `columns` (of those its dataset's files have), in that order, of every row; a
    /// column of another type is an error, not a panic later.
    fn read(&self, columns: &[&str]) -> Result<Vec<RecordBatch>, InspectError> {
        let ParquetObject {
            object,
            dataset,
            metadata,
        } = self;
        let fail = |source| object.unreadable(*dataset, source);
        let (schema, ours) = (metadata.schema().clone(), dataset.schema());
        let indices = columns
            .iter()
            .map(|name| {
                let wrong = |problem: String| fail(ParquetError::General(problem));
                let index = schema
                    .index_of(name)
                    .map_err(|_| wrong(format!("it has no column {name}")))?;
                let (found, expected) = (
                    schema.field(index).data_type(),
                    ours.field_with_name(name)
                        .expect("asked for our columns")
                        .data_type(),
                );
                if found != expected {
                    return Err(wrong(format!("its {name} is {found}, not {expected}")));
                }
                Ok(index)
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let mask = parquet::arrow::ProjectionMask::roots(
            metadata.metadata().file_metadata().schema_descr(),
            indices.iter().copied(),
        );
        let parquet = metadata.metadata();
        let mut chunks = Vec::new();
        for row_group in parquet.row_groups() {
            for (leaf, column) in row_group.columns().iter().enumerate() {
                if mask.leaf_included(leaf) {
                    let (start, length) = column.byte_range();
                    if start.saturating_add(length) > object.size {
                        return Err(fail(ParquetError::General(format!(
                            "its footer places a column at bytes {start}..+{length}, past its \
                             {} bytes",
                            object.size
                        ))));
                    }
                    let bytes = object
                        .storage
                        .get_range(&object.key, start..start + length)
                        .map_err(|e| fail(ParquetError::External(Box::new(e))))?;
                    chunks.push((start, bytes));
                }
            }
        }
        let fetched = Fetched {
            chunks,
            size: object.size,
        };
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(fetched, metadata.clone())
            .with_projection(mask)
            .build()
            .map_err(fail)?;
        // The projection keeps the file's column order; put the columns in the order asked.
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        let order: Vec<usize> = indices
            .iter()
            .map(|i| sorted.binary_search(i).expect("an index asked for"))
            .collect();
        let mut batches = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| fail(e.into()))?;
            batches.push(batch.project(&order).map_err(|e| fail(e.into()))?);
        }
        Ok(batches)
    }
}

/// The column chunks one read needs, each fetched whole: the reader asks for every page's
/// header and body separately, which would otherwise be a request (or a file read) each.
struct Fetched {
    /// (offset in the file, bytes).
    chunks: Vec<(u64, Bytes)>,
    size: u64,
}

impl Fetched {
    /// The fetched bytes from `start` to the end of its chunk.
    fn from(&self, start: u64) -> parquet::errors::Result<Bytes> {
        self.chunks
            .iter()
            .find(|(at, bytes)| *at <= start && start < at + bytes.len() as u64)
            .map(|(at, bytes)| bytes.slice((start - at) as usize..))
            .ok_or_else(|| {
                ParquetError::General(format!("byte {start} lies outside the columns read"))
            })
    }
}

impl Length for Fetched {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for Fetched {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.from(start)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let bytes = self.from(start)?;
        if bytes.len() < length {
            return Err(ParquetError::General(format!(
                "bytes {start}..{} run past the column read",
                start + length as u64
            )));
        }
        Ok(bytes.slice(..length))
    }
}

/// An object read by ranges, so its footer costs only its own bytes.
struct Object {
    storage: Arc<dyn Storage>,
    key: String,
    size: u64,
}

impl Object {
    fn unreadable(&self, dataset: Dataset, source: ParquetError) -> InspectError {
        InspectError::Unreadable {
            dataset,
            key: self.key.clone(),
            source,
        }
    }
}

impl Length for Object {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for Object {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self
            .get_bytes(start, (self.size - start.min(self.size)) as usize)?
            .reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.storage
            .get_range(&self.key, start..start + length as u64)
            .map_err(|e| ParquetError::External(Box::new(e)))
    }
}

/// `2026-11-30 05:42:00 UTC`.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// Cells of the widest bar.
const BAR_WIDTH: usize = 30;

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let bucket_width = self
            .datasets
            .iter()
            .map(|d| d.bucket.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<10}  {:<bucket_width$}  {:>6}  {:>13}  {:>9}  partitions",
            "dataset", "bucket", "files", "rows", "bytes"
        );
        for d in &self.datasets {
            let partitions = match &d.partitions {
                Some((first, last)) if first == last => first.clone(),
                Some((first, last)) => format!("{first} … {last}"),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<10}  {:<bucket_width$}  {:>6}  {:>13}  {:>9}  {partitions}",
                d.dataset.as_str(),
                d.bucket,
                grouped(d.files as i64),
                grouped(d.rows as i64),
                size(d.bytes)
            );
        }
        out.push('\n');
        if self.windows.is_empty() {
            out.push_str("windows: none closed yet\n");
        } else if !self.every_postcode {
            let _ = writeln!(out, "latest windows ({}), newest first", self.windows.len());
        }
        for window in &self.windows {
            let events: i64 = window.counts.iter().map(|(_, n)| n).sum();
            let _ = writeln!(
                out,
                "{} … {}  {} events, {} postcodes",
                utc(window.start),
                &utc(window.end)[11..],
                grouped(events),
                grouped(window.counts.len() as i64)
            );
            let shown = if self.every_postcode {
                window.counts.len()
            } else {
                POSTCODES_SHOWN
            };
            let max = window.counts.first().map_or(1, |(_, n)| (*n).max(1));
            let postcode_width = window
                .counts
                .iter()
                .map(|(p, _)| p.len())
                .max()
                .unwrap_or(0);
            for (postcode, count) in window.counts.iter().take(shown) {
                let cells = ((*count as f64 / max as f64) * BAR_WIDTH as f64).round() as usize;
                let _ = writeln!(
                    out,
                    "  {postcode:<postcode_width$}  {:>11}  {}",
                    grouped(*count),
                    "#".repeat(cells.max(1))
                );
            }
            if window.counts.len() > shown {
                let _ = writeln!(
                    out,
                    "  … {} more postcodes (--window {} shows every one)",
                    window.counts.len() - shown,
                    chrono::DateTime::from_timestamp_millis(window.start)
                        .map_or(window.start.to_string(), |t| t
                            .format("%Y-%m-%dT%H:%M:%SZ")
                            .to_string())
                );
            }
        }
        out.push('\n');
        let dead: u64 = self.reasons.iter().map(|r| r.count).sum();
        if dead == 0 {
            out.push_str("dead letters: none\n");
        } else {
            let _ = writeln!(out, "dead letters by reason ({})", grouped(dead as i64));
            let kind_width = self.reasons.iter().map(|r| r.kind.len()).max().unwrap_or(0);
            for reason in &self.reasons {
                let _ = writeln!(
                    out,
                    "  {:<kind_width$}  {:>11}",
                    reason.kind,
                    grouped(reason.count as i64)
                );
                for sample in &reason.samples {
                    let _ = writeln!(out, "      {sample}");
                }
            }
        }
        f.write_str(&out)
    }
}

/// A consumer group's progress, as `inspect` shows it after the datasets.
pub struct GroupReport<'a>(pub &'a GroupProgress);

impl std::fmt::Display for GroupReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.0;
        let at = |to: Option<i64>| to.map_or("nothing yet".into(), utc);
        writeln!(f, "consumer group {} reading {}", p.group, p.topic)?;
        let merged = (p.merged_to > 0).then_some(p.merged_to);
        writeln!(f, "  rows merged to {}", at(merged))?;
        write!(f, "  windows final to {}", at(p.horizon.to))?;
        match &p.horizon.held {
            Some(hold) => writeln!(f, ", held back by {hold}")?,
            None => writeln!(f)?,
        }
        let width = (p.partitions.iter())
            .filter_map(|q| q.member.as_ref().map(String::len))
            .fold("member".len(), usize::max);
        writeln!(f, "  partition  {:<width$}  final to", "member")?;
        for q in &p.partitions {
            let final_to = match &q.member {
                Some(_) => at(q.final_to),
                None => "no checkpoint yet".into(),
            };
            let member = q.member.as_deref().unwrap_or("-");
            writeln!(f, "  {:>9}  {member:<width$}  {final_to}", q.partition)?;
        }
        writeln!(
            f,
            "  partial count files not merged yet: {}",
            p.partial_files
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_groups_report_says_what_holds_its_rows_back_and_where_each_partition_is() {
        use crate::commit::{Hold, Horizon, PartitionProgress};
        const T: i64 = 1_700_000_040_000;
        let progress = GroupProgress {
            group: "g".into(),
            topic: "t".into(),
            merged_to: T,
            horizon: Horizon {
                to: Some(T + 60_000),
                held: Some(Hold::Partition {
                    partition: 1,
                    member: "second".into(),
                    final_to: Some(T + 60_000),
                }),
            },
            partitions: vec![
                PartitionProgress {
                    partition: 0,
                    member: Some("first".into()),
                    final_to: Some(T + 120_000),
                },
                PartitionProgress {
                    partition: 1,
                    member: Some("second".into()),
                    final_to: Some(T + 60_000),
                },
                PartitionProgress {
                    partition: 2,
                    member: None,
                    final_to: None,
                },
            ],
            partial_files: 2,
        };
        assert_eq!(
            GroupReport(&progress).to_string(),
            "consumer group g reading t\n\
             \x20 rows merged to 2023-11-14 22:14:00 UTC\n\
             \x20 windows final to 2023-11-14 22:15:00 UTC, held back by partition 1 (second)\n\
             \x20 partition  member  final to\n\
             \x20         0  first   2023-11-14 22:16:00 UTC\n\
             \x20         1  second  2023-11-14 22:15:00 UTC\n\
             \x20         2  -       no checkpoint yet\n\
             \x20 partial count files not merged yet: 2\n"
        );
    }

    #[test]
    fn counts_of_one_window_from_several_files_add_up_and_sort_by_count() {
        let mut counts = WindowCounts::default();
        counts.add(0, 60_000, "B2", 2);
        counts.add(0, 60_000, "A1", 1);
        counts.add(60_000, 120_000, "A1", 7);
        counts.add(0, 60_000, "A1", 3);
        assert_eq!(counts.len(), 2);
        let first = counts.holding(59_999).unwrap();
        assert_eq!(first.counts, [("A1".to_string(), 4), ("B2".to_string(), 2)]);
        assert_eq!(counts.holding(60_000).unwrap().start, 60_000);
        assert_eq!(counts.holding(120_000), None);
        assert_eq!(counts.holding(-1), None);
        let latest: Vec<i64> = counts.latest(5).iter().map(|w| w.start).collect();
        assert_eq!(latest, [60_000, 0]);
    }

    #[test]
    fn samples_are_one_escaped_line_cut_short() {
        assert_eq!(sample(b"{\"a\":\n1}"), r#"{"a":\n1}"#);
        assert_eq!(sample(b"\xff"), "\u{fffd}");
        let long = sample(&[b'x'; 300]);
        assert_eq!(long.chars().count(), SAMPLE_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_path_s_partition_is_its_folder() {
        assert_eq!(
            partition_of("dt=2026-11-30/event_hour=05/part-a.parquet"),
            "dt=2026-11-30/event_hour=05"
        );
        assert_eq!(partition_of("part-a.parquet"), "");
    }

    #[test]
    fn the_report_shows_the_busiest_postcodes_and_says_how_to_see_the_rest() {
        let counts: Vec<(String, i64)> = (0..12).map(|i| (format!("P{i:02}"), 100 - i)).collect();
        let inspection = Inspection {
            datasets: vec![DatasetSummary {
                dataset: Dataset::Raw,
                bucket: "raw-bucket".into(),
                files: 2,
                rows: 1234,
                bytes: 5_000,
                partitions: Some((
                    "dt=2026-11-30/event_hour=05".into(),
                    "dt=2026-11-30/event_hour=06".into(),
                )),
            }],
            windows: vec![Window {
                start: 1_764_481_320_000,
                end: 1_764_481_380_000,
                counts,
            }],
            every_postcode: false,
            reasons: vec![Reason {
                kind: "invalid_json".into(),
                count: 3,
                samples: vec!["{oops".into()],
            }],
        };
        let text = inspection.to_string();
        assert!(text.contains("raw         raw-bucket       2          1,234     5.0 kB  dt=2026-11-30/event_hour=05 … dt=2026-11-30/event_hour=06"), "{text}");
        assert!(
            text.contains("2025-11-30 05:42:00 UTC … 05:43:00 UTC  1,134 events, 12 postcodes"),
            "{text}"
        );
        assert!(
            text.contains("  P00          100  ##############################\n"),
            "{text}"
        );
        assert!(!text.contains("P10"), "{text}");
        assert!(
            text.contains("… 2 more postcodes (--window 2025-11-30T05:42:00Z shows every one)"),
            "{text}"
        );
        assert!(
            text.contains("dead letters by reason (3)\n  invalid_json            3\n      {oops\n"),
            "{text}"
        );
        let every = Inspection {
            every_postcode: true,
            ..inspection
        };
        assert!(every.to_string().contains("P11"));
    }
}
