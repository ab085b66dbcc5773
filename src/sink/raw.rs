//! Valid events → the raw dataset, one open file per (event hour, source partition), in
//! `dt=/event_hour=` folders. A file holds one partition's rows so that its name, from the
//! first and last offset in it, can never be another partition's.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::encoder::Spares;
use super::naming;
use super::rolling::{BATCH_ROWS, FileSettings, RollingFile, RowBuffer, Slot, Strings};
use super::{Finished, SinkError};
use crate::record::{Offset, Partition};
use crate::validate::Pageview;

/// Files open at once. Event time is nearly ordered, so only the newest hour or two of each
/// partition are usually open; the cap bounds memory when input jumps around in time.
const MAX_OPEN_FILES: usize = 16;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("postcode", DataType::Utf8, false),
        Field::new("webpage", DataType::Utf8, false),
        Field::new("timestamp", DataType::Int64, false),
    ]))
});

/// Plain vectors rather than Arrow builders: a batch is copied out of them, so they keep
/// their memory from batch to batch where a builder's goes with the array it finishes.
pub struct RawRows {
    user_id: Vec<i64>,
    postcode: Strings,
    webpage: Strings,
    timestamp: Vec<i64>,
}

/// Typical string lengths, so a batch's buffers are allocated once rather than regrown.
const POSTCODE_BYTES: usize = 8;
const WEBPAGE_BYTES: usize = 48;

impl Default for RawRows {
    fn default() -> Self {
        RawRows {
            user_id: Vec::with_capacity(BATCH_ROWS),
            postcode: Strings::with_capacity(BATCH_ROWS, BATCH_ROWS * POSTCODE_BYTES),
            webpage: Strings::with_capacity(BATCH_ROWS, BATCH_ROWS * WEBPAGE_BYTES),
            timestamp: Vec::with_capacity(BATCH_ROWS),
        }
    }
}

impl RowBuffer for RawRows {
    fn schema() -> SchemaRef {
        SCHEMA.clone()
    }

    fn dictionary_columns() -> &'static [&'static str] {
        &["postcode", "webpage"]
    }

    fn statistics_columns() -> &'static [&'static str] {
        &["timestamp"]
    }

    fn delta_columns() -> &'static [&'static str] {
        &["user_id", "timestamp"]
    }

    fn len(&self) -> usize {
        self.user_id.len()
    }

    fn size(&self) -> usize {
        self.len() * 24 + self.postcode.bytes() + self.webpage.bytes()
    }

    fn take_batch(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(self.user_id.drain(..))),
            Arc::new(self.postcode.take()),
            Arc::new(self.webpage.take()),
            Arc::new(Int64Array::from_iter_values(self.timestamp.drain(..))),
        ];
        RecordBatch::try_new(SCHEMA.clone(), columns).expect("columns match the schema")
    }
}

pub struct RawSink {
    settings: FileSettings,
    /// Ordered by [`slot_key`], so the first is the oldest hour. There are few, and event
    /// time is nearly ordered, so a row's file is found looking from the newest: one or two
    /// comparisons where a map took a dozen once sparse input kept the cap's files open.
    open: Vec<(i64, RollingFile<RawRows>)>,
    spares: Spares<RawRows>,
}

/// (hour, partition) as one integer ordered by hour, then partition: a lookup per row
/// compares integers, not tuples (3% of all instructions in a profile). Hours since 1970 fit
/// in 31 bits, and a partition's bits fill the lower 32.
fn slot_key(hour: i64, partition: i32) -> i64 {
    (hour << 32) | i64::from(partition as u32)
}

impl RawSink {
    pub fn new(settings: FileSettings) -> Self {
        RawSink {
            settings,
            open: Vec::new(),
            spares: Spares::default(),
        }
    }

    pub fn push(
        &mut self,
        event: &Pageview<'_>,
        partition: i32,
        position: i64,
        finished: &mut Vec<Finished>,
    ) -> Result<(), SinkError> {
        let hour = naming::hour_of(event.timestamp);
        let key = slot_key(hour, partition);
        let index = match self.open.iter().rposition(|(k, _)| *k == key) {
            Some(index) => index,
            None => self.open_file(key, hour, partition, finished)?,
        };
        let file = &mut self.open[index].1;
        file.rows.user_id.push(event.user_id);
        file.rows.postcode.push(&event.postcode);
        file.rows.webpage.push(&event.webpage);
        file.rows.timestamp.push(event.timestamp);
        finished.extend(file.pushed(position, &self.settings)?);
        Ok(())
    }

    /// Opens the file of `key`, finishing the oldest at the cap; returns its index.
    fn open_file(
        &mut self,
        key: i64,
        hour: i64,
        partition: i32,
        finished: &mut Vec<Finished>,
    ) -> Result<usize, SinkError> {
        if self.open.len() >= MAX_OPEN_FILES {
            let (_, mut oldest) = self.open.remove(0);
            finished.extend(oldest.finish(&self.settings)?);
            oldest.retire();
        }
        let file = RollingFile::new(
            Slot {
                folder: naming::raw_partition(hour),
                tag: self.settings.tags.partition(partition),
                partition,
                hour,
            },
            &self.spares,
        );
        let index = self.open.partition_point(|(k, _)| *k < key);
        self.open.insert(index, (key, file));
        Ok(index)
    }

    /// Finishes files older than the age limit and forgets slots with nothing buffered.
    pub fn finish_due(
        &mut self,
        now: Instant,
        finished: &mut Vec<Finished>,
    ) -> Result<(), SinkError> {
        for (_, file) in &mut self.open {
            if file.is_due(now, &self.settings) {
                finished.extend(file.finish(&self.settings)?);
            }
        }
        let mut index = 0;
        while index < self.open.len() {
            if self.open[index].1.is_empty() {
                self.open.remove(index).1.retire();
            } else {
                index += 1;
            }
        }
        Ok(())
    }

    pub fn finish_all(&mut self, finished: &mut Vec<Finished>) -> Result<(), SinkError> {
        while !self.open.is_empty() {
            let (_, mut file) = self.open.remove(0);
            finished.extend(file.finish(&self.settings)?);
            file.retire();
        }
        Ok(())
    }

    /// (partition, position of the first row not in a finished file) of each open file.
    pub fn unfinished(&self) -> impl Iterator<Item = (Partition, Offset)> + '_ {
        self.open
            .iter()
            .filter_map(|(_, f)| Some((f.slot().partition, f.first()?)))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use super::*;
    use crate::sink::Dataset;
    use crate::sink::rolling::test_settings;
    use crate::storage::LocalStorage;

    const HOUR: i64 = 3_600_000;
    const T0: i64 = 1_700_000_000_000;

    fn event(timestamp: i64) -> Pageview<'static> {
        Pageview {
            user_id: 1,
            postcode: Cow::Borrowed("SW19"),
            webpage: Cow::Borrowed("https://w.example/"),
            timestamp,
        }
    }

    #[test]
    fn rows_go_to_a_file_per_event_hour_and_partition_named_by_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let mut sink = RawSink::new(test_settings(Dataset::Raw, "raw", storage));
        let mut finished = Vec::new();
        for (position, (partition, timestamp)) in
            [(0, T0), (0, T0 + HOUR), (1, T0), (0, T0 + 1), (1, T0 + 2)]
                .into_iter()
                .enumerate()
        {
            sink.push(&event(timestamp), partition, position as i64, &mut finished)
                .unwrap();
        }
        assert!(finished.is_empty(), "nothing is due yet");
        let mut open: Vec<(i32, i64)> = sink.unfinished().collect();
        open.sort();
        assert_eq!(open, [(0, 0), (0, 1), (1, 2)]);
        sink.finish_all(&mut finished).unwrap();
        let mut files: Vec<(String, u64, i32)> = finished
            .iter()
            .map(|f| (f.key.clone(), f.rows, f.partition))
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                (
                    "raw/dt=2023-11-14/event_hour=22/part-t-000000000000-000000000003.parquet"
                        .into(),
                    2,
                    0
                ),
                (
                    "raw/dt=2023-11-14/event_hour=22/part-t-000000000002-000000000004.parquet"
                        .into(),
                    2,
                    1
                ),
                (
                    "raw/dt=2023-11-14/event_hour=23/part-t-000000000001-000000000001.parquet"
                        .into(),
                    1,
                    0
                ),
            ]
        );
        assert_eq!(sink.unfinished().count(), 0);
    }

    #[test]
    fn a_file_open_longer_than_the_age_limit_is_finished_and_its_slot_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let mut sink = RawSink::new(test_settings(Dataset::Raw, "raw", storage));
        let mut finished = Vec::new();
        sink.push(&event(T0), 0, 7, &mut finished).unwrap();
        sink.finish_due(Instant::now(), &mut finished).unwrap();
        assert!(finished.is_empty(), "younger than 10 s");
        sink.finish_due(Instant::now() + Duration::from_secs(11), &mut finished)
            .unwrap();
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].last, 7);
        assert!(sink.open.is_empty(), "the empty slot is forgotten");
    }
}
