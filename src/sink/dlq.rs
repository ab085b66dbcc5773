//! Malformed and late records → the dead-letter dataset: the exact payload bytes, why, and
//! where the record came from. One open file per source partition, named by its offsets.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Int32Builder, Int64Builder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::encoder::Spares;
use super::naming;
use super::rolling::{FileSettings, RollingFile, RowBuffer, Slot};
use super::{Finished, SinkError};
use crate::record::ErrorKind;
use crate::record::Origin;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("payload", DataType::Binary, false),
        Field::new("error_kind", DataType::Utf8, false),
        Field::new("error_message", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, true),
        Field::new("line", DataType::Int64, true),
        Field::new("topic", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, true),
    ]))
});

#[derive(Default)]
pub struct DlqRows {
    payload: BinaryBuilder,
    error_kind: StringBuilder,
    error_message: StringBuilder,
    file: StringBuilder,
    line: Int64Builder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
}

impl RowBuffer for DlqRows {
    fn schema() -> SchemaRef {
        SCHEMA.clone()
    }

    fn dictionary_columns() -> &'static [&'static str] {
        &["error_kind", "file", "topic"]
    }

    fn statistics_columns() -> &'static [&'static str] {
        &["line", "offset"]
    }

    fn delta_columns() -> &'static [&'static str] {
        &["line", "offset"]
    }

    fn len(&self) -> usize {
        self.payload.len()
    }

    fn size(&self) -> usize {
        let strings = [
            &self.error_kind,
            &self.error_message,
            &self.file,
            &self.topic,
        ];
        self.len() * 48
            + self.payload.values_slice().len()
            + strings
                .iter()
                .map(|s| s.values_slice().len())
                .sum::<usize>()
    }

    fn take_batch(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.payload.finish()),
            Arc::new(self.error_kind.finish()),
            Arc::new(self.error_message.finish()),
            Arc::new(self.file.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
        ];
        RecordBatch::try_new(SCHEMA.clone(), columns).expect("columns match the schema")
    }
}

/// One DLQ row, borrowed from the record it describes.
pub struct DeadLetter<'a> {
    pub payload: &'a [u8],
    pub kind: ErrorKind,
    pub message: &'a str,
    pub origin: &'a Origin,
    pub offset: i64,
}

pub struct DlqSink {
    settings: FileSettings,
    open: BTreeMap<i32, RollingFile<DlqRows>>,
    spares: Spares<DlqRows>,
}

impl DlqSink {
    pub fn new(settings: FileSettings) -> Self {
        DlqSink {
            settings,
            open: BTreeMap::new(),
            spares: Spares::default(),
        }
    }

    pub fn push(
        &mut self,
        letter: &DeadLetter<'_>,
        finished: &mut Vec<Finished>,
    ) -> Result<(), SinkError> {
        let partition = letter.origin.partition();
        let (settings, spares) = (&self.settings, &self.spares);
        let file = self.open.entry(partition).or_insert_with(|| {
            RollingFile::new(
                Slot {
                    folder: String::new(),
                    tag: settings.tags.partition(partition),
                    partition,
                    hour: 0,
                },
                spares,
            )
        });
        let rows = &mut file.rows;
        rows.payload.append_value(letter.payload);
        rows.error_kind.append_value(letter.kind.as_str());
        rows.error_message.append_value(letter.message);
        match letter.origin {
            Origin::File { path } => {
                rows.file.append_value(path);
                rows.line.append_value(letter.offset);
                rows.topic.append_null();
                rows.partition.append_null();
                rows.offset.append_null();
            }
            Origin::Topic { topic, partition } => {
                rows.file.append_null();
                rows.line.append_null();
                rows.topic.append_value(topic);
                rows.partition.append_value(*partition);
                rows.offset.append_value(letter.offset);
            }
        }
        finished.extend(file.pushed(letter.offset, &self.settings)?);
        Ok(())
    }

    pub fn finish_due(
        &mut self,
        now: Instant,
        finished: &mut Vec<Finished>,
    ) -> Result<(), SinkError> {
        for file in self.open.values_mut() {
            if file.is_due(now, &self.settings) {
                finished.extend(file.finish(&self.settings)?);
            }
        }
        Ok(())
    }

    pub fn finish_all(&mut self, finished: &mut Vec<Finished>) -> Result<(), SinkError> {
        for file in self.open.values_mut() {
            finished.extend(file.finish(&self.settings)?);
        }
        Ok(())
    }

    /// Publishes [`naming::EMPTY_FILE`] when the bucket holds no Parquet file.
    pub fn ensure_a_file(&self) -> Result<(), SinkError> {
        let bucket = format!("{}/", self.settings.bucket);
        let names = self.settings.storage.list(&bucket)?;
        if names.iter().any(|name| name.ends_with(".parquet")) {
            return Ok(());
        }
        self.settings.publish_empty::<DlqRows>(naming::EMPTY_FILE)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::outputs::Dataset;
    use crate::sink::rolling::test_settings;
    use crate::storage::{LocalStorage, Storage};

    fn sink(storage: Arc<dyn Storage>) -> DlqSink {
        DlqSink::new(test_settings(Dataset::Dlq, "dlq", storage))
    }

    #[test]
    fn dead_letters_keep_their_bytes_reason_and_origin_in_a_file_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let mut dlq = sink(storage.clone());
        let topic = |partition| Origin::Topic {
            topic: "events".into(),
            partition,
        };
        let mut finished = Vec::new();
        for (origin, offset, payload) in [
            (topic(0), 4, &b"\xff{"[..]),
            (topic(1), 9, b"{}"),
            (topic(0), 6, b"[1]"),
        ] {
            let letter = DeadLetter {
                payload,
                kind: ErrorKind::InvalidJson,
                message: "payload is not valid JSON",
                origin: &origin,
                offset,
            };
            dlq.push(&letter, &mut finished).unwrap();
        }
        dlq.finish_all(&mut finished).unwrap();
        let mut keys: Vec<(&str, u64)> =
            finished.iter().map(|f| (f.key.as_str(), f.rows)).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                ("dlq/part-t-000000000004-000000000006.parquet", 2),
                ("dlq/part-t-000000000009-000000000009.parquet", 1),
            ]
        );
        let file = finished.into_iter().find(|f| f.partition == 0).unwrap();
        let key = file.key.clone();
        file.publish().unwrap();
        let bytes = storage.get(&key).unwrap().unwrap();
        let batches: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes::Bytes::from(bytes),
            )
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let payloads = batches[0]
            .column_by_name("payload")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::BinaryArray>()
            .unwrap();
        assert_eq!(payloads.value(0), b"\xff{", "the exact bytes");
        let offsets = batches[0]
            .column_by_name("offset")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        assert_eq!(offsets.values(), &[4, 6]);
        assert_eq!(batches[0].column_by_name("line").unwrap().null_count(), 2);
    }

    #[test]
    fn a_dataset_without_files_gets_one_of_no_rows_with_its_columns() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let dlq = sink(storage.clone());
        dlq.ensure_a_file().unwrap();
        let files = storage.list_files("dlq").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, naming::EMPTY_FILE);
        let bytes = storage
            .get(&format!("dlq/{}", naming::EMPTY_FILE))
            .unwrap()
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes),
        )
        .unwrap();
        assert_eq!(reader.schema().as_ref(), DlqRows::schema().as_ref());
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);

        // Once there is a file, of rows or of none, nothing more is written.
        dlq.ensure_a_file().unwrap();
        storage
            .put("dlq/part-x-000000000001-000000000002.parquet", b"PAR1")
            .unwrap();
        storage
            .delete(&format!("dlq/{}", naming::EMPTY_FILE))
            .unwrap();
        dlq.ensure_a_file().unwrap();
        assert_eq!(storage.list_files("dlq").unwrap().len(), 1);
    }
}
