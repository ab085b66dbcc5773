//! Buffered rows → one Parquet file at a time, rolled by size and age, then published.
//!
//! Rows collect in column buffers and go to the file's [`Encoder`] a batch at a time, which
//! encodes them on the workers and streams pages into a staged file, so memory per open file
//! is a few batches plus one row group, whatever the file's final size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{RecordBatch, StringArray};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::encoder::{Encoder, Spares};
use super::naming;
use super::{Dataset, Finished, SinkError, Tags};
use crate::storage::Storage;
use crate::workers::Workers;

/// Rows per record batch handed to the encoder: large enough to amortise per-batch work,
/// small enough that buffered rows stay a few MiB.
pub const BATCH_ROWS: usize = 16 * 1024;
/// Rows per Parquet row group, which the encoder holds in memory until it is flushed.
const ROW_GROUP_ROWS: usize = 256 * 1024;
/// A row group is also flushed at this encoded size, so wide rows (DLQ payloads) cannot
/// make one row group, and so memory, grow with the input.
const ROW_GROUP_BYTES: usize = 8 << 20;

/// Column buffers for one dataset's rows: filled on the processing thread, made a batch and
/// encoded on a worker, then handed back empty to be filled again.
pub trait RowBuffer: Default + Send + 'static {
    fn schema() -> SchemaRef;
    /// Columns worth dictionary encoding: low-cardinality strings.
    fn dictionary_columns() -> &'static [&'static str];
    /// Columns whose min/max statistics can skip data on read: the time columns. Others
    /// (random ids, a handful of strings spread over every page) would cost a compare per
    /// value and prune nothing.
    fn statistics_columns() -> &'static [&'static str];
    /// Integer columns stored as DELTA_BINARY_PACKED without a codec: each value takes the
    /// bits its difference from the previous needs, which here is both smaller (raw files
    /// shrink by almost half) and cheaper to write than plain values through Snappy.
    fn delta_columns() -> &'static [&'static str];
    fn len(&self) -> usize;
    /// At least the Arrow size of the buffered rows, in bytes.
    fn size(&self) -> usize;
    /// Moves the buffered rows into a batch, leaving the buffer empty.
    fn take_batch(&mut self) -> RecordBatch;
}

/// A string column a [`RowBuffer`] fills: each value's end in `values`. A batch copies it
/// out, so it keeps its memory from batch to batch where an Arrow builder's goes with the
/// array it finishes.
pub struct Strings {
    ends: Vec<i32>,
    values: String,
}

impl Strings {
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut ends = Vec::with_capacity(rows + 1);
        ends.push(0);
        Strings {
            ends,
            values: String::with_capacity(bytes),
        }
    }

    /// Bytes of the values buffered.
    pub fn bytes(&self) -> usize {
        self.values.len()
    }

    pub fn push(&mut self, value: &str) {
        self.values.push_str(value);
        let end = i32::try_from(self.values.len()).expect("a batch's strings fit in 2 GiB");
        self.ends.push(end);
    }

    /// The values as an array, leaving this empty. Not checked again: checking each batch's
    /// offsets and UTF-8 was 1.7% of a run's instructions.
    pub fn take(&mut self) -> StringArray {
        // SAFETY: `ends` starts at 0 and only grows, each end the length of `values` after a
        // whole `&str` was appended: monotonic offsets on UTF-8 boundaries of valid UTF-8.
        let array = unsafe {
            let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::from(self.ends.clone()));
            StringArray::new_unchecked(offsets, Buffer::from(self.values.as_bytes()), None)
        };
        self.ends.truncate(1);
        self.values.clear();
        array
    }
}

/// What every open file of a dataset shares.
pub struct FileSettings {
    pub dataset: Dataset,
    pub bucket: String,
    pub storage: Arc<dyn Storage>,
    pub tags: Tags,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub compression: Compression,
    /// Where batches are encoded.
    pub workers: Workers,
}

/// How a dataset's files are encoded (the choices [`RowBuffer`] documents): the sinks' and
/// a compaction's rewritten files alike.
pub(super) fn properties<B: RowBuffer>(compression: Compression) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_created_by(concat!("pageview ", env!("CARGO_PKG_VERSION")).into());
    for column in B::dictionary_columns() {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*column), true);
    }
    for column in B::statistics_columns() {
        props =
            props.set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::Page);
    }
    for column in B::delta_columns() {
        props = props
            .set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(ColumnPath::from(*column), Compression::UNCOMPRESSED);
    }
    props.build()
}

impl FileSettings {
    fn properties<B: RowBuffer>(&self) -> WriterProperties {
        properties::<B>(self.compression)
    }

    /// Publishes a file of no rows with `B`'s columns at `<bucket>/<name>`.
    pub fn publish_empty<B: RowBuffer>(&self, name: &str) -> Result<(), SinkError> {
        let error = |source| SinkError::Encode {
            dataset: self.dataset,
            source,
        };
        let file = self.storage.create(&self.bucket)?;
        let writer =
            ArrowWriter::try_new(file, B::schema(), Some(self.properties::<B>())).map_err(error)?;
        let file = writer.into_inner().map_err(error)?;
        file.publish(&naming::key(&self.bucket, "", name))?;
        Ok(())
    }
}

/// Which rows a file holds: where it goes and what names it.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The Hive-style folder (`dt=…/event_hour=…`), empty for none.
    pub folder: String,
    /// Names the input in the file name, so two inputs never write the same key.
    pub tag: String,
    /// The source partition whose rows these are (raw and DLQ files hold one partition).
    pub partition: i32,
    /// The event hour of a raw file's rows.
    pub hour: i64,
}

/// The file currently being filled for one slot of one dataset.
pub struct RollingFile<B: RowBuffer> {
    slot: Slot,
    pub rows: B,
    spares: Spares<B>,
    encoder: Option<Encoder<B>>,
    opened_at: Instant,
    first: i64,
    last: i64,
    count: u64,
}

impl<B: RowBuffer> RollingFile<B> {
    /// A file for `slot`, its row buffers taken from and given back to `spares`.
    pub fn new(slot: Slot, spares: &Spares<B>) -> Self {
        RollingFile {
            slot,
            rows: spares.take(),
            spares: spares.clone(),
            encoder: None,
            opened_at: Instant::now(),
            first: 0,
            last: 0,
            count: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// The position of the first row not yet in a finished file, if any.
    pub fn first(&self) -> Option<i64> {
        (self.count > 0).then_some(self.first)
    }

    /// Records the position of the row just pushed into `rows`; encodes a full batch and
    /// finishes the file once it reaches the size limit.
    pub fn pushed(
        &mut self,
        position: i64,
        settings: &FileSettings,
    ) -> Result<Option<Finished>, SinkError> {
        if self.count == 0 {
            self.first = position;
            self.opened_at = Instant::now();
        }
        self.last = position;
        self.count += 1;
        if self.rows.len() < BATCH_ROWS {
            return Ok(None);
        }
        self.encode(settings)?;
        let reached = self
            .encoder
            .as_mut()
            .expect("encode opened an encoder")
            .reached(settings.max_bytes)
            .map_err(|source| SinkError::Encode {
                dataset: settings.dataset,
                source,
            })?;
        if reached {
            return self.finish(settings);
        }
        Ok(None)
    }

    /// True when the file has been open longer than the age limit.
    pub fn is_due(&self, now: Instant, settings: &FileSettings) -> bool {
        self.count > 0 && now.duration_since(self.opened_at) >= settings.max_age
    }

    /// Hands the buffered rows to the file's encoder and starts a new buffer.
    fn encode(&mut self, settings: &FileSettings) -> Result<(), SinkError> {
        if self.rows.len() == 0 {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.rows, self.spares.take());
        self.encoder(settings)?
            .write(rows)
            .map_err(|source| SinkError::Encode {
                dataset: settings.dataset,
                source,
            })
    }

    /// The file's encoder, the file opened on first use.
    fn encoder(&mut self, settings: &FileSettings) -> Result<&mut Encoder<B>, SinkError> {
        if self.encoder.is_none() {
            self.encoder = Some(self.open(settings)?);
        }
        Ok(self.encoder.as_mut().expect("just opened"))
    }

    /// Creates the staged file and its encoder.
    fn open(&self, settings: &FileSettings) -> Result<Encoder<B>, SinkError> {
        let file = settings.storage.create(&settings.bucket)?;
        let writer = ArrowWriter::try_new(file, B::schema(), Some(settings.properties::<B>()))
            .map_err(|source| SinkError::Encode {
                dataset: settings.dataset,
                source,
            })?;
        Ok(Encoder::new(
            writer,
            settings.workers.clone(),
            self.spares.clone(),
        ))
    }

    /// Gives the row buffer of a file with nothing buffered to the next file opened.
    pub fn retire(self) {
        debug_assert!(self.is_empty(), "a file retires finished");
        self.spares.give(self.rows);
    }

    /// Completes everything buffered as one file, ready to publish; `None` when there was
    /// nothing to write.
    pub fn finish(&mut self, settings: &FileSettings) -> Result<Option<Finished>, SinkError> {
        if self.count == 0 {
            return Ok(None);
        }
        let encoder = match self.encoder.take() {
            Some(encoder) => encoder,
            None => self.open(settings)?,
        };
        let file = encoder
            .finish(&mut self.rows)
            .map_err(|source| SinkError::Encode {
                dataset: settings.dataset,
                source,
            })?;
        let key = naming::key(
            &settings.bucket,
            &self.slot.folder,
            &naming::file_name(&self.slot.tag, self.first, self.last),
        );
        Ok(Some(Finished {
            file,
            dataset: settings.dataset,
            key,
            rows: std::mem::take(&mut self.count),
            partition: self.slot.partition,
            hour: self.slot.hour,
            last: self.last,
        }))
    }
}

/// Settings for a sink under test: files of `dataset` in bucket `bucket` of `storage`,
/// tagged `t`, rolled at 1 MiB or 10 s.
#[cfg(test)]
pub(super) fn test_settings(
    dataset: super::Dataset,
    bucket: &str,
    storage: Arc<dyn crate::storage::Storage>,
) -> FileSettings {
    FileSettings {
        dataset,
        bucket: bucket.into(),
        storage,
        tags: super::Tags::Fixed("t".into()),
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(10),
        compression: Compression::SNAPPY,
        workers: Workers::none(),
    }
}
