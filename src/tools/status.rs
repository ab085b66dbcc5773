//! The live status page: the latest few windows the router closed, each with its busiest
//! postcodes, and the current throughput. The page (`GET /`, served by `serve`) reads its
//! counters from `/metrics` and these from `/api/status`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stats::{RecentWindows, WindowSummary};

/// The page itself: self-contained (no external assets), so it works offline.
pub const PAGE: &str = include_str!("status.html");

/// The throughput is measured over at least this long. The page cannot measure it itself:
/// the counters move once a tick, and a headless browser's clock runs faster than real time.
const RATE_OVER: Duration = Duration::from_secs(1);

/// What the page is shown: written by the processing thread once a tick, read by the HTTP
/// thread.
#[derive(Debug, Default)]
pub struct Board {
    shown: Mutex<Shown>,
}

#[derive(Debug, Default)]
struct Shown {
    windows: Vec<WindowSummary>,
    records_per_second: Option<f64>,
    /// Records read and when, at the start of the current measurement.
    since: Option<(u64, Instant)>,
}

impl Board {
    /// The router has closed `recent` and read `records` by `now`.
    pub fn show(&self, recent: &RecentWindows, records: u64, now: Instant) {
        let mut shown = self.shown.lock().expect("never poisoned");
        shown.windows = recent.latest().collect();
        match shown.since {
            Some((before, at)) if now.duration_since(at) >= RATE_OVER => {
                let secs = now.duration_since(at).as_secs_f64();
                shown.records_per_second = Some(records.saturating_sub(before) as f64 / secs);
                shown.since = Some((records, now));
            }
            Some(_) => {}
            None => shown.since = Some((records, now)),
        }
    }

    /// `{"records_per_second": …, "windows": [...]}`, windows newest first; the rate is null
    /// until measured.
    pub fn json(&self) -> String {
        let shown = self.shown.lock().expect("never poisoned");
        serde_json::json!({
            "records_per_second": shown.records_per_second,
            "windows": shown.windows,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::ClosedWindow;

    #[test]
    fn the_board_serves_what_it_was_shown_as_json() {
        let board = Board::default();
        assert_eq!(board.json(), r#"{"records_per_second":null,"windows":[]}"#);
        let mut recent = RecentWindows::default();
        recent.closed(ClosedWindow::minute(60_000, &[("A1", 3)]));
        let start = Instant::now();
        board.show(&recent, 100, start);
        board.show(&recent, 150, start + RATE_OVER / 2);
        let json: serde_json::Value = serde_json::from_str(&board.json()).unwrap();
        assert_eq!(json["records_per_second"], serde_json::Value::Null);
        board.show(&recent, 400, start + 2 * RATE_OVER);
        let json: serde_json::Value = serde_json::from_str(&board.json()).unwrap();
        let rate = 300.0 / (2 * RATE_OVER).as_secs_f64();
        assert_eq!(json["records_per_second"], rate);
        assert_eq!(json["windows"][0]["start_ms"], 60_000);
        assert_eq!(json["windows"][0]["top"][0]["postcode"], "A1");
        assert_eq!(json["windows"][0]["top"][0]["count"], 3);
    }
}
