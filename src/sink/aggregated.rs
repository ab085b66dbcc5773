//! Final windows → the aggregated dataset: one row per (window, postcode), by `dt=` of the
//! window start.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::encoder::Spares;
use super::naming;
use super::rolling::{BATCH_ROWS, FileSettings, RollingFile, RowBuffer, Slot, Strings};
use super::{Finished, SinkError};
use crate::window::ClosedWindow;

fn timestamp_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("window_start", timestamp_ms(), false),
        Field::new("window_end", timestamp_ms(), false),
        Field::new("postcode", DataType::Utf8, false),
        Field::new("pageview_count", DataType::Int64, false),
    ]))
});

/// Plain vectors a batch is copied out of, as [`super::raw::RawRows`]: they keep their
/// capacity, where moving them into the arrays regrew them from nothing for every batch.
pub struct AggregatedRows {
    window_start: Vec<i64>,
    window_end: Vec<i64>,
    postcode: Strings,
    pageview_count: Vec<i64>,
}

/// A window's row: a postcode of a few bytes.
const POSTCODE_BYTES: usize = 8;

impl Default for AggregatedRows {
    fn default() -> Self {
        AggregatedRows {
            window_start: Vec::with_capacity(BATCH_ROWS),
            window_end: Vec::with_capacity(BATCH_ROWS),
            postcode: Strings::with_capacity(BATCH_ROWS, BATCH_ROWS * POSTCODE_BYTES),
            pageview_count: Vec::with_capacity(BATCH_ROWS),
        }
    }
}

impl RowBuffer for AggregatedRows {
    fn schema() -> SchemaRef {
        SCHEMA.clone()
    }

    fn dictionary_columns() -> &'static [&'static str] {
        &["postcode"]
    }

    fn statistics_columns() -> &'static [&'static str] {
        &["window_start", "window_end"]
    }

    fn delta_columns() -> &'static [&'static str] {
        &["window_start", "window_end", "pageview_count"]
    }

    fn len(&self) -> usize {
        self.window_start.len()
    }

    fn size(&self) -> usize {
        self.len() * 28 + self.postcode.bytes()
    }

    fn take_batch(&mut self) -> RecordBatch {
        let timestamps = |v: &mut Vec<i64>| {
            Arc::new(TimestampMillisecondArray::from_iter_values(v.drain(..)).with_timezone("UTC"))
                as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            timestamps(&mut self.window_start),
            timestamps(&mut self.window_end),
            Arc::new(self.postcode.take()),
            Arc::new(Int64Array::from_iter_values(self.pageview_count.drain(..))),
        ];
        RecordBatch::try_new(SCHEMA.clone(), columns).expect("columns match the schema")
    }
}

/// Windows close in time order, so one file is open at a time; it is named after the first
/// and last window start in it, and labelled with every partition it counts.
pub struct AggregatedSink {
    settings: FileSettings,
    file: Option<(i64, RollingFile<AggregatedRows>)>,
    spares: Spares<AggregatedRows>,
}

impl AggregatedSink {
    pub fn new(settings: FileSettings) -> Self {
        AggregatedSink {
            settings,
            file: None,
            spares: Spares::default(),
        }
    }

    pub fn push(
        &mut self,
        window: &ClosedWindow,
        finished: &mut Vec<Finished>,
    ) -> Result<(), SinkError> {
        let day = naming::day_of(window.start);
        if self.file.as_ref().is_some_and(|(d, _)| *d != day) {
            self.finish_all(finished)?;
        }
        let (settings, spares) = (&self.settings, &self.spares);
        let (_, file) = self.file.get_or_insert_with(|| {
            let slot = Slot {
                folder: naming::date_partition(window.start),
                tag: settings.tags.all(),
                partition: 0,
                hour: 0,
            };
            (day, RollingFile::new(slot, spares))
        });
        for (postcode, count) in &window.counts {
            file.rows.window_start.push(window.start);
            file.rows.window_end.push(window.end);
            file.rows.postcode.push(postcode);
            file.rows.pageview_count.push(*count);
            finished.extend(file.pushed(window.start, &self.settings)?);
        }
        Ok(())
    }

    pub fn finish_due(
        &mut self,
        now: Instant,
        finished: &mut Vec<Finished>,
    ) -> Result<(), SinkError> {
        if self
            .file
            .as_ref()
            .is_some_and(|(_, f)| f.is_due(now, &self.settings))
        {
            self.finish_all(finished)?;
        }
        Ok(())
    }

    pub fn finish_all(&mut self, finished: &mut Vec<Finished>) -> Result<(), SinkError> {
        if let Some((_, mut file)) = self.file.take() {
            finished.extend(file.finish(&self.settings)?);
            file.retire();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Dataset;
    use crate::sink::rolling::test_settings;
    use crate::storage::LocalStorage;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_700_006_400_000;

    #[test]
    fn windows_of_a_day_share_a_file_named_by_their_starts_and_a_new_day_starts_one() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let mut sink = AggregatedSink::new(test_settings(Dataset::Aggregated, "agg", storage));
        let mut finished = Vec::new();
        sink.push(
            &ClosedWindow::minute(T0, &[("SW19", 3), ("E1", 1)]),
            &mut finished,
        )
        .unwrap();
        sink.push(
            &ClosedWindow::minute(T0 + 60_000, &[("N1", 2)]),
            &mut finished,
        )
        .unwrap();
        assert!(finished.is_empty());
        sink.push(
            &ClosedWindow::minute(T0 + DAY, &[("SW19", 5)]),
            &mut finished,
        )
        .unwrap();
        assert_eq!(
            finished.len(),
            1,
            "the next day finished the first day's file"
        );
        assert_eq!(
            finished[0].key,
            format!(
                "agg/dt=2023-11-15/part-t-{T0:012}-{:012}.parquet",
                T0 + 60_000
            )
        );
        assert_eq!(finished[0].rows, 3, "one row per (window, postcode)");
        sink.finish_all(&mut finished).unwrap();
        assert_eq!(finished.len(), 2);
        assert!(finished[1].key.starts_with("agg/dt=2023-11-16/"));
        assert_eq!(finished[1].rows, 1);
    }
}
