//! Dataset, partition and input position → the key a file is published at (pure).
//!
//! A key is a function of what the file holds (its source and the first and last input
//! position or window in it), never of wall-clock time, so re-writing the same rows after a
//! restart lands on the same key instead of beside it.

use chrono::{DateTime, Datelike, Timelike};

const HOUR_MS: i64 = 3_600_000;

/// The hour an event time falls in, as a number: the raw dataset's partition key.
pub fn hour_of(event_ms: i64) -> i64 {
    event_ms.div_euclid(HOUR_MS)
}

/// `dt=YYYY-MM-DD/event_hour=HH` for the hour returned by [`hour_of`].
pub fn raw_partition(hour: i64) -> String {
    let t = utc(hour * HOUR_MS);
    format!(
        "dt={:04}-{:02}-{:02}/event_hour={:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour()
    )
}

/// `dt=YYYY-MM-DD` of an event time.
pub fn date_partition(ms: i64) -> String {
    let t = utc(ms);
    format!("dt={:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}

/// The day an event time falls in, as a number: changes exactly when [`date_partition`] does.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(24 * HOUR_MS)
}

/// When the event time a partition folder covers ends: the hour after a raw partition's
/// (`dt=…/event_hour=…`), the day after an aggregated one's (`dt=…`); `None` for any other
/// folder, the DLQ's table root among them, which no event time ever closes.
pub fn partition_end(partition: &str) -> Option<i64> {
    let (day, hour) = match partition.split_once('/') {
        Some((day, hour)) => (day, Some(hour.strip_prefix("event_hour=")?)),
        None => (partition, None),
    };
    let date = chrono::NaiveDate::parse_from_str(day.strip_prefix("dt=")?, "%Y-%m-%d").ok()?;
    let start = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    match hour {
        None => Some(start + 24 * HOUR_MS),
        Some(hour) if hour.len() == 2 => match hour.parse::<i64>() {
            Ok(h @ 0..=23) => Some(start + (h + 1) * HOUR_MS),
            _ => None,
        },
        Some(_) => None,
    }
}

fn utc(ms: i64) -> DateTime<chrono::Utc> {
    // Validated event times lie in 2000..=2100, far inside chrono's range.
    DateTime::from_timestamp_millis(ms).expect("event time within chrono's range")
}

/// `part-<source>-<first>-<last>.parquet`; numbers zero-padded so names sort by position.
pub fn file_name(source: &str, first: i64, last: i64) -> String {
    format!("part-{source}-{first:012}-{last:012}.parquet")
}

/// The (first, last) positions a name made by [`file_name`] holds: for a file of windows,
/// the first and last window start in it.
pub fn positions(file_name: &str) -> Option<(i64, i64)> {
    let stem = file_name.strip_suffix(".parquet")?;
    let mut fields = stem.rsplitn(3, '-');
    let last = fields.next()?.parse().ok()?;
    let first = fields.next()?.parse().ok()?;
    fields.next()?.strip_prefix("part-")?;
    Some((first, last))
}

/// The file of no rows a dataset holds when nothing else was written to it (see
/// [`crate::sink::Sinks::ensure_dlq_file`]); a name without positions, so no file of rows
/// is ever named so.
pub const EMPTY_FILE: &str = "part-empty.parquet";

/// `<bucket>/<partition>/<file>` (the partition may be empty).
pub fn key(bucket: &str, partition: &str, file: &str) -> String {
    if partition.is_empty() {
        format!("{bucket}/{file}")
    } else {
        format!("{bucket}/{partition}/{file}")
    }
}

/// A source label safe inside a file name: ASCII letters, digits, `.` and `_` kept, anything
/// else (including `-`, which separates the name's fields) becomes `_`.
pub fn source_tag(label: &str) -> String {
    let tag: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if tag.is_empty() { "input".into() } else { tag }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_names_positions_read_back() {
        let name = file_name("pageview_events.p0_2", 1_700_000_040_000, 1_700_000_100_000);
        assert_eq!(
            positions(&name),
            Some((1_700_000_040_000, 1_700_000_100_000))
        );
        assert_eq!(positions(&file_name("x", 3, 12)), Some((3, 12)));
        assert_eq!(positions(EMPTY_FILE), None);
        assert_eq!(positions("part-x-1-2.json"), None);
        assert_eq!(positions("other-1-2.parquet"), None);
    }

    #[test]
    fn partitions_follow_utc_event_time() {
        assert_eq!(
            raw_partition(hour_of(1_700_000_000_123)),
            "dt=2023-11-14/event_hour=22"
        );
        assert_eq!(
            raw_partition(hour_of(946_684_800_000)),
            "dt=2000-01-01/event_hour=00"
        );
        assert_eq!(
            raw_partition(hour_of(946_684_799_999 + 1)),
            "dt=2000-01-01/event_hour=00"
        );
        assert_eq!(
            raw_partition(hour_of(4_102_444_800_000)),
            "dt=2100-01-01/event_hour=00"
        );
        assert_eq!(date_partition(1_700_000_000_123), "dt=2023-11-14");
    }

    #[test]
    fn only_the_datasets_partition_folders_have_an_end() {
        assert_eq!(
            partition_end("dt=2023-11-14/event_hour=22"),
            Some(1_699_999_200_000 + HOUR_MS)
        );
        assert_eq!(partition_end("dt=2023-11-14"), Some(1_700_006_400_000));
        for other in [
            "",
            "dt=2023-11-14/event_hour=24",
            "dt=2023-11-14/event_hour=7",
            "dt=2023-11-14/hour=07",
            "dt=2023-13-01",
            "dt=2023-11-14/event_hour=07/x",
            "day=2023-11-14",
        ] {
            assert_eq!(partition_end(other), None, "{other}");
        }
    }

    #[test]
    fn keys_and_names() {
        assert_eq!(
            key(
                "raw",
                "dt=2023-11-14/event_hour=22",
                &file_name("events", 1, 1000)
            ),
            "raw/dt=2023-11-14/event_hour=22/part-events-000000000001-000000001000.parquet"
        );
        assert_eq!(key("dlq", "", "f"), "dlq/f");
        assert_eq!(source_tag("my events-2.jsonl"), "my_events_2.jsonl");
        assert_eq!(source_tag(""), "input");
    }

    proptest! {
        #[test]
        fn same_hour_same_partition(t in 946_684_800_000i64..4_102_444_800_000) {
            let hour = hour_of(t);
            prop_assert_eq!(raw_partition(hour), raw_partition(hour_of(hour * HOUR_MS)));
            prop_assert!(raw_partition(hour).starts_with(&date_partition(t)));
            prop_assert_eq!(day_of(t), day_of(hour * HOUR_MS));
        }

        #[test]
        fn a_partition_ends_where_the_next_begins(t in 946_684_800_000i64..4_102_444_800_000) {
            let hour_end = partition_end(&raw_partition(hour_of(t))).unwrap();
            prop_assert_eq!(hour_end, (hour_of(t) + 1) * HOUR_MS);
            let day_end = partition_end(&date_partition(t)).unwrap();
            prop_assert_eq!(day_end, (day_of(t) + 1) * 24 * HOUR_MS);
        }

        #[test]
        fn names_sort_by_first_position(a in 0i64..1_000_000_000_000, b in 0i64..1_000_000_000_000) {
            let (na, nb) = (file_name("s", a, a), file_name("s", b, b));
            prop_assert_eq!(na.cmp(&nb), a.cmp(&b));
        }

        #[test]
        fn tags_never_hold_a_separator(label in "\\PC{0,80}") {
            let tag = source_tag(&label);
            prop_assert!(!tag.is_empty() && tag.len() <= 64);
            prop_assert!(tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_'));
        }
    }
}
