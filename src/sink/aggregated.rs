//! Final windows → the aggregated dataset: one row per (window, postcode), by `dt=` of the
//! window start.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::naming;
use super::rolling::{FileSettings, RollingFile, RowBuffer, Slot};
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

#[derive(Default)]
pub struct AggregatedRows {
    window_start: Vec<i64>,
    window_end: Vec<i64>,
    postcode: StringBuilder,
    pageview_count: Vec<i64>,
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

    fn take_batch(&mut self) -> RecordBatch {
        let timestamps = |v: &mut Vec<i64>| {
            Arc::new(TimestampMillisecondArray::from(std::mem::take(v)).with_timezone("UTC"))
                as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            timestamps(&mut self.window_start),
            timestamps(&mut self.window_end),
            Arc::new(self.postcode.finish()),
            Arc::new(Int64Array::from(std::mem::take(&mut self.pageview_count))),
        ];
        RecordBatch::try_new(SCHEMA.clone(), columns).expect("columns match the schema")
    }
}

/// Windows close in time order, so one file is open at a time; it is named after the first
/// and last window start in it, and labelled with every partition it counts.
pub struct AggregatedSink {
    settings: FileSettings,
    file: Option<(i64, RollingFile<AggregatedRows>)>,
}

impl AggregatedSink {
    pub fn new(settings: FileSettings) -> Self {
        AggregatedSink {
            settings,
            file: None,
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
        let settings = &self.settings;
        let (_, file) = self.file.get_or_insert_with(|| {
            let slot = Slot {
                folder: naming::date_partition(window.start),
                tag: settings.tags.all(),
                partition: 0,
                hour: 0,
            };
            (day, RollingFile::new(slot))
        });
        for (postcode, count) in &window.counts {
            file.rows.window_start.push(window.start);
            file.rows.window_end.push(window.end);
            file.rows.postcode.append_value(postcode);
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
        }
        Ok(())
    }
}
