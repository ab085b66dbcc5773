//! Counters → the lines a person reads: the live summary and the end-of-run summary.

use std::fmt::Write;
use std::time::Duration;

use crate::sink::Dataset;
use crate::stats::Stats;

/// One compact line for a running pipeline.
pub fn live_line(stats: &Stats, rate: f64) -> String {
    let dead = stats.total_dead_letters();
    let mut line = format!(
        "{} ev/s | records {} | valid {} | dlq {}",
        human(rate),
        stats.records,
        stats.valid,
        dead
    );
    if dead > 0 {
        let _ = write!(line, " ({})", stats.dead_letter_breakdown());
    }
    let _ = write!(
        line,
        " | windows {} | files {}",
        stats.windows,
        stats.files_written()
    );
    line
}

/// How far through `total` units of work (`of` names the total: `138.8 MB`) a run is, at
/// `rate` units/s: a bar of `width` cells (none when 0), the share, and the time left.
pub fn progress(done: u64, total: u64, of: &str, rate: f64, width: usize) -> String {
    let share = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let mut line = String::new();
    if width > 0 {
        let filled = (share * width as f64).round() as usize;
        let _ = write!(
            line,
            "[{}{}] ",
            "#".repeat(filled),
            "-".repeat(width - filled)
        );
    }
    let _ = write!(line, "{:.0}% of {of}", share * 100.0);
    let left = total.saturating_sub(done) as f64;
    if rate > 0.0 && left > 0.0 {
        let _ = write!(line, ", {} left", span((left / rate).ceil()));
    }
    line
}

/// A length of time as a person reads it: `8.6 s`, `15 s`, `10 min`, `23.9 h`, `11.6 days`.
pub fn span(secs: f64) -> String {
    if secs < 10.0 && secs.fract() != 0.0 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 48.0 * 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
}

/// What a real-time generator is about to do: its rate, and how long `events` take at it.
pub fn generating(rate: f64, events: Option<u64>, to: &str) -> String {
    let length = match events {
        Some(n) => format!("{n} events take {}", span(n as f64 / rate)),
        None => "until stopped (Ctrl-C)".into(),
    };
    format!("generating {rate} events/s in real time to {to}: {length}")
}

/// The summary printed when a run ends.
pub fn summary(stats: &Stats, elapsed: Duration, bytes_read: Option<u64>) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut out = format!(
        "{} records in {:.2} s ({} records/s",
        stats.records,
        secs,
        human(stats.records as f64 / secs)
    );
    if let Some(bytes) = bytes_read {
        let _ = write!(out, ", {:.0} MB/s", bytes as f64 / secs / 1e6);
    }
    out.push_str(")\n");
    if stats.replayed > 0 {
        let _ = writeln!(
            out,
            "  re-read      {} (checkpointed already; only raw rows lost with open files rewritten)",
            stats.replayed
        );
    }
    let _ = writeln!(
        out,
        "  valid        {} (late {})",
        stats.valid,
        stats.late()
    );
    let _ = write!(out, "  dead-letter  {}", stats.total_dead_letters());
    if stats.total_dead_letters() > 0 {
        let _ = write!(out, ": {}", stats.dead_letter_breakdown());
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "  windows      {} ({} rows)",
        stats.windows, stats.window_rows
    );
    for dataset in Dataset::ALL {
        let d = stats.written(dataset);
        let _ = writeln!(
            out,
            "  {:<12} {} files, {} rows, {:.1} MB",
            dataset.as_str(),
            d.files,
            d.rows,
            d.bytes as f64 / 1e6
        );
    }
    out
}

/// `1234567.0` → `1.23M`.
pub fn human(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e4 => format!("{:.1}k", x / 1e3),
        // The original's 1.16 events/s must not read as 1.
        x if x < 10.0 && x.fract() != 0.0 => format!("{x:.2}"),
        x => format!("{x:.0}"),
    }
}

/// `1234567` → `1,234,567`.
pub fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `12.3 MB`.
pub fn size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut x = bytes as f64;
    let mut unit = 0;
    while x >= 1000.0 && unit < units.len() - 1 {
        x /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{x:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ErrorKind;

    #[test]
    fn numbers_are_grouped_and_sizes_in_units() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-1000), "-1,000");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(12_345_678), "12.3 MB");
    }

    #[test]
    fn progress_shows_the_share_and_the_time_left() {
        assert_eq!(
            progress(250, 1000, "0.0 MB", 50.0, 8),
            "[##------] 25% of 0.0 MB, 15 s left"
        );
        assert_eq!(
            progress(3_000_000, 3_000_000, "3.0 MB", 1e6, 0),
            "100% of 3.0 MB"
        );
        assert_eq!(progress(5, 0, "0.0 MB", 0.0, 4), "[####] 100% of 0.0 MB");
        assert_eq!(progress(10, 4, "0.0 MB", 1.0, 2), "[##] 100% of 0.0 MB");
        assert_eq!(
            progress(0, 600, "6 runs", 1.0, 0),
            "0% of 6 runs, 10 min left"
        );
    }

    #[test]
    fn spans_and_what_a_generator_will_take() {
        assert_eq!(human(1.1583), "1.16");
        assert_eq!(human(7.0), "7");
        assert_eq!(human(123.4), "123");
        assert_eq!(span(8.62), "8.6 s");
        assert_eq!(span(15.0), "15 s");
        assert_eq!(span(600.0), "10 min");
        assert_eq!(span(86_207.0), "23.9 h");
        assert_eq!(span(1e6), "11.6 days");
        assert_eq!(
            generating(1.16, Some(10), "events.jsonl"),
            "generating 1.16 events/s in real time to events.jsonl: 10 events take 8.6 s"
        );
        assert_eq!(
            generating(1.16, Some(100_000), "stdout"),
            "generating 1.16 events/s in real time to stdout: 100000 events take 23.9 h"
        );
        assert_eq!(
            generating(0.01, None, "stdout"),
            "generating 0.01 events/s in real time to stdout: until stopped (Ctrl-C)"
        );
    }

    #[test]
    fn lines_show_what_happened() {
        let mut stats = Stats::default();
        stats.records = 12;
        stats.valid = 10;
        stats.windows = 2;
        stats.dead_letter(ErrorKind::InvalidJson);
        stats.dead_letter(ErrorKind::LateEvent);
        let line = live_line(&stats, 2_500_000.0);
        assert_eq!(
            line,
            "2.50M ev/s | records 12 | valid 10 | dlq 2 (invalid_json 1, late_event 1) | windows 2 | files 0"
        );
        let summary = summary(&stats, Duration::from_secs(2), Some(2_000_000));
        assert!(
            summary.starts_with("12 records in 2.00 s (6 records/s, 1 MB/s)"),
            "{summary}"
        );
        assert!(summary.contains("valid        10 (late 1)"), "{summary}");
        assert!(!summary.contains("re-read"), "{summary}");
        stats.replayed = 3;
        let again = super::summary(&stats, Duration::from_secs(2), None);
        assert!(again.contains("re-read      3 "), "{again}");
    }
}
