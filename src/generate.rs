//! Seeded randomness → realistic pageview JSON lines (SPEC.md 6), with optional malformed,
//! late and out-of-order events for exercising the dead-letter path.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const POSTCODES: [&str; 15] = [
    "SW19", "E1", "W1", "N1", "SE1", "EC1", "WC1", "NW1", "M1", "B1", "L1", "G1", "EH1", "CF1",
    "BT1",
];
const PAGES: [(&str, u32); 5] = [
    ("https://www.website.com/index.html", 10),
    ("https://www.website.com/products.html", 5),
    ("https://www.website.com/about.html", 3),
    ("https://www.website.com/contact.html", 2),
    ("https://www.website.com/blog.html", 1),
];
const MAX_USER_ID: i64 = 100_000;
/// Late events are back-dated by this much: far past any sensible watermark delay.
const LATE_BY_MS: i64 = 10 * 60_000;
/// How many lines go to the processor in one chunk; bounds the delay a chunk adds.
const CHUNK_LINES: usize = 1024;

/// What the generator makes; validated by the CLI before it gets here.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Events per second of event time (and of wall time unless simulated).
    pub rate: f64,
    /// Stop after this many events; `None` runs until stopped.
    pub events: Option<u64>,
    pub seed: u64,
    /// Share of events deliberately broken, each class of break equally likely.
    pub malformed_share: f64,
    /// Share of valid events back-dated far enough to arrive late.
    pub late_share: f64,
    /// Valid events are back-dated by up to this much, arriving out of order.
    pub jitter_ms: i64,
    /// Event time starts here and advances `1/rate` per event, as fast as events are made
    /// until it reaches the clock, then with it.
    pub simulated_start_ms: Option<i64>,
    /// Simulated time runs this many times as fast as the clock, not as fast as events are
    /// made.
    pub speedup: Option<f64>,
}

/// The ways the generator breaks an event, one per `error_kind` a payload can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    Json,
    Utf8,
    MissingField,
    WrongType,
    UserId,
    Postcode,
    Webpage,
    Timestamp,
}

const BREAKS: [Break; 8] = [
    Break::Json,
    Break::Utf8,
    Break::MissingField,
    Break::WrongType,
    Break::UserId,
    Break::Postcode,
    Break::Webpage,
    Break::Timestamp,
];

pub struct Generator {
    config: GeneratorConfig,
    rng: ChaCha8Rng,
    postcodes: WeightedIndex<f64>,
    pages: WeightedIndex<u32>,
    made: u64,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        let zipf = (1..=POSTCODES.len()).map(|i| 1.0 / (i as f64).powf(1.5));
        Generator {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            postcodes: WeightedIndex::new(zipf).expect("positive weights"),
            pages: WeightedIndex::new(PAGES.iter().map(|p| p.1)).expect("positive weights"),
            config,
            made: 0,
        }
    }

    pub fn made(&self) -> u64 {
        self.made
    }

    pub fn rate(&self) -> f64 {
        self.config.rate
    }

    /// True when events carry the wall-clock time and are paced to it.
    pub fn is_real_time(&self) -> bool {
        self.config.simulated_start_ms.is_none()
    }

    /// How events are paced: to the clock in real time, `speedup` times as fast as it in
    /// simulated time, or not at all; simulated time never passes the clock.
    pub(crate) fn pace(&self) -> Pace {
        let simulated = self.simulated();
        match self.config.speedup {
            Some(speedup) if simulated.is_some() => {
                Pace::new(self.config.rate * speedup, true, simulated)
            }
            _ => Pace::new(self.config.rate, simulated.is_none(), simulated),
        }
    }

    fn simulated(&self) -> Option<Simulated> {
        self.config.simulated_start_ms.map(|start_ms| Simulated {
            start_ms,
            rate: self.config.rate,
        })
    }

    pub fn is_done(&self) -> bool {
        self.config.events.is_some_and(|n| self.made >= n)
    }

    /// The event time of the next event: simulated, or the wall clock.
    fn event_time(&self) -> i64 {
        match self.simulated() {
            Some(simulated) => simulated.time_of(self.made),
            None => now_ms(),
        }
    }

    /// Appends the next event as one JSON line (no newline) to `out`; returns the postcode
    /// it was made for, the message key when events are keyed by postcode.
    pub fn next_line(&mut self, out: &mut Vec<u8>) -> &'static str {
        let mut timestamp = self.event_time();
        self.made += 1;
        let user_id = self.rng.random_range(1..=MAX_USER_ID);
        let postcode = POSTCODES[self.postcodes.sample(&mut self.rng)];
        let webpage = PAGES[self.pages.sample(&mut self.rng)].0;
        if self.config.jitter_ms > 0 {
            timestamp -= self.rng.random_range(0..=self.config.jitter_ms);
        }
        let broken = (self.rng.random::<f64>() < self.config.malformed_share)
            .then(|| BREAKS[self.rng.random_range(0..BREAKS.len())]);
        if broken.is_none() && self.rng.random::<f64>() < self.config.late_share {
            timestamp -= LATE_BY_MS;
        }
        write_event(out, user_id, postcode, webpage, timestamp, broken);
        postcode
    }

    /// Writes events as JSONL until done or `stop` is set, pacing to the rate in real time.
    pub fn write_to(&mut self, out: &mut impl Write, stop: &AtomicBool) -> io::Result<()> {
        self.write_paced(out, stop, &self.pace())
    }

    /// [`Generator::write_to`] on `pace`'s clock. The wait comes before the end, so the last
    /// of `--events N` takes its share of time too and the whole takes `N / rate`.
    fn write_paced<C: Clock>(
        &mut self,
        out: &mut impl Write,
        stop: &AtomicBool,
        pace: &Pace<C>,
    ) -> io::Result<()> {
        let mut line = Vec::with_capacity(256);
        while pace.wait_for(self.made, stop, || {}) && !self.is_done() {
            line.clear();
            self.next_line(&mut line);
            line.push(b'\n');
            out.write_all(&line)?;
            if pace.is_real_time() {
                out.flush()?;
            }
        }
        out.flush()
    }

    /// Sends events in JSONL chunks until done or `stop` is set; ends when the receiver has
    /// gone. Dropping the sender afterwards tells the processor the stream has ended.
    pub fn send_to(
        &mut self,
        chunks: &std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
        stop: &AtomicBool,
    ) {
        let pace = self.pace();
        while pace.wait_for(self.made, stop, || {}) && !self.is_done() {
            let mut chunk = Vec::with_capacity(CHUNK_LINES * 128);
            // In real time a chunk holds what is due now, so events reach the processor at once.
            let due = pace.due(self.made + 1);
            let mut lines = 0;
            while lines < CHUNK_LINES && self.made < due && !self.is_done() {
                self.next_line(&mut chunk);
                chunk.push(b'\n');
                lines += 1;
            }
            if chunks.send(Ok(chunk)).is_err() {
                return;
            }
        }
    }
}

fn write_event(
    out: &mut Vec<u8>,
    user_id: i64,
    postcode: &str,
    webpage: &str,
    timestamp: i64,
    broken: Option<Break>,
) {
    let mut int = itoa::Buffer::new();
    let start = out.len();
    out.extend_from_slice(b"{\"user_id\": ");
    match broken {
        Some(Break::WrongType) => {
            out.push(b'"');
            out.extend_from_slice(int.format(user_id).as_bytes());
            out.push(b'"');
        }
        Some(Break::UserId) => out.extend_from_slice(int.format(-user_id).as_bytes()),
        _ => out.extend_from_slice(int.format(user_id).as_bytes()),
    }
    out.extend_from_slice(b", \"postcode\": \"");
    match broken {
        Some(Break::Postcode) => out.extend_from_slice(postcode.to_ascii_lowercase().as_bytes()),
        Some(Break::Utf8) => out.extend_from_slice(b"\xff\xfe"),
        _ => out.extend_from_slice(postcode.as_bytes()),
    }
    out.push(b'"');
    match broken {
        Some(Break::MissingField) => {}
        Some(Break::Webpage) => {
            out.extend_from_slice(b", \"webpage\": \"ftp://");
            out.extend_from_slice(&webpage.as_bytes()["https://".len()..]);
            out.push(b'"');
        }
        _ => {
            out.extend_from_slice(b", \"webpage\": \"");
            out.extend_from_slice(webpage.as_bytes());
            out.push(b'"');
        }
    }
    out.extend_from_slice(b", \"timestamp\": ");
    let timestamp = match broken {
        // A classic producer bug: seconds where milliseconds are due.
        Some(Break::Timestamp) => timestamp / 1000,
        _ => timestamp,
    };
    out.extend_from_slice(int.format(timestamp).as_bytes());
    out.push(b'}');
    if broken == Some(Break::Json) {
        out.truncate(start + (out.len() - start) / 2);
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A day: how far back simulated time starts when the run has no end, so that it shows a
/// day of events before it follows the clock.
const SIMULATED_DAY_MS: i64 = 24 * 3_600_000;
/// The earliest valid event time (docs/CONTRACT.md 1).
const EARLIEST_MS: i64 = 946_684_800_000;

/// Where simulated time starts unless given: so that `events` at `rate` end at `now_ms`, or a
/// day back when the run has no end. Never before the earliest valid event time.
pub fn simulated_start(now_ms: i64, rate: f64, events: Option<u64>) -> i64 {
    let span = events.map_or(SIMULATED_DAY_MS, |n| {
        (n.saturating_sub(1) as f64 * 1000.0 / rate).min(i64::MAX as f64) as i64
    });
    now_ms.saturating_sub(span).max(EARLIEST_MS)
}

/// Simulated event time: event `n` is `n / rate` seconds after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Simulated {
    start_ms: i64,
    rate: f64,
}

impl Simulated {
    fn time_of(self, n: u64) -> i64 {
        self.start_ms + (n as f64 * 1000.0 / self.rate) as i64
    }

    /// How many events have a time at or before `now_ms`.
    fn reached(self, now_ms: i64) -> u64 {
        if now_ms < self.start_ms {
            return 0;
        }
        ((now_ms - self.start_ms) as f64 * self.rate / 1000.0) as u64 + 1
    }
}

/// The pace's view of time, so its logic can be tested with a clock the test controls.
pub(crate) trait Clock {
    /// Time since the clock was started.
    fn elapsed(&self) -> Duration;
    /// The time of day, in ms since the epoch.
    fn epoch_ms(&self) -> i64;
    fn sleep(&self, duration: Duration);
}

pub(crate) struct WallClock(Instant);

impl Clock for WallClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    fn epoch_ms(&self) -> i64 {
        now_ms()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// The longest one sleep of a wait lasts, so a stop is seen and a producer polled while an
/// event of a slow rate (one every 100 s at 0.01/s) is not yet due.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// Wall-clock pacing for real-time generation: event `i` is due `i / rate` seconds after
/// the start, so `N` events at `r`/s take `N / r` seconds at every rate. In simulated time,
/// an event is due once the clock has reached its time: a run that catches up with the clock
/// goes on at `rate` in real time, and no event is ever ahead of the clock.
pub(crate) struct Pace<C = WallClock> {
    clock: C,
    rate: f64,
    real_time: bool,
    simulated: Option<Simulated>,
    /// The clock's time of day when last read, so that simulated time far behind it costs
    /// no clock reads.
    seen_ms: std::cell::Cell<i64>,
}

impl Pace {
    pub(crate) fn new(rate: f64, real_time: bool, simulated: Option<Simulated>) -> Self {
        Pace::with_clock(WallClock(Instant::now()), rate, real_time, simulated)
    }
}

impl<C: Clock> Pace<C> {
    pub(crate) fn with_clock(
        clock: C,
        rate: f64,
        real_time: bool,
        simulated: Option<Simulated>,
    ) -> Self {
        Pace {
            clock,
            rate,
            real_time,
            simulated,
            seen_ms: std::cell::Cell::new(i64::MIN),
        }
    }

    /// The clock's time of day if `at_least` is beyond what it last showed.
    fn epoch_ms(&self, at_least: i64) -> i64 {
        if self.seen_ms.get() < at_least {
            self.seen_ms.set(self.clock.epoch_ms());
        }
        self.seen_ms.get()
    }

    /// How long until event number `made` may be made.
    fn wait(&self, made: u64) -> Duration {
        let paced = if self.real_time {
            self.due_at(made).saturating_sub(self.clock.elapsed())
        } else {
            Duration::ZERO
        };
        let clock = self.simulated.map_or(Duration::ZERO, |simulated| {
            let at = simulated.time_of(made);
            Duration::from_millis(at.saturating_sub(self.epoch_ms(at)).max(0) as u64)
        });
        paced.max(clock)
    }

    fn is_real_time(&self) -> bool {
        self.real_time
    }

    /// When event number `made` is due, after the start.
    fn due_at(&self, made: u64) -> Duration {
        Duration::from_secs_f64(made as f64 / self.rate)
    }

    /// How many events should have been made by now.
    fn due(&self, made: u64) -> u64 {
        let paced = if self.real_time {
            (self.clock.elapsed().as_secs_f64() * self.rate) as u64
        } else {
            u64::MAX
        };
        let reached = self.simulated.map_or(u64::MAX, |simulated| {
            simulated.reached(self.epoch_ms(simulated.time_of(made)))
        });
        paced.min(reached).max(made)
    }

    /// Waits until event number `made` is due, calling `between` after each slice of the
    /// wait (a producer polls its deliveries there); false when `stop` was set first.
    pub(crate) fn wait_for(&self, made: u64, stop: &AtomicBool, mut between: impl FnMut()) -> bool {
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let wait = self.wait(made);
            if wait.is_zero() {
                return true;
            }
            self.clock.sleep(wait.min(WAIT_SLICE));
            between();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ErrorKind;
    use crate::validate::validate;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::rc::Rc;

    /// A clock that moves only when slept on, remembering each sleep; started at `epoch_ms`
    /// into the epoch.
    #[derive(Clone, Default)]
    struct TestClock {
        now: Rc<Cell<Duration>>,
        sleeps: Rc<RefCell<Vec<Duration>>>,
        epoch_ms: i64,
    }

    impl Clock for TestClock {
        fn elapsed(&self) -> Duration {
            self.now.get()
        }

        fn epoch_ms(&self) -> i64 {
            self.epoch_ms + self.now.get().as_millis() as i64
        }

        fn sleep(&self, duration: Duration) {
            self.now.set(self.now.get() + duration);
            self.sleeps.borrow_mut().push(duration);
        }
    }

    /// Notes the clock's time as each line is written.
    struct Stamped {
        clock: TestClock,
        lines_at: Vec<Duration>,
    }

    impl Write for Stamped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let lines = buf.iter().filter(|&&b| b == b'\n').count();
            let now = self.clock.elapsed();
            self.lines_at.extend(std::iter::repeat_n(now, lines));
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_micros(1)
    }

    #[test]
    fn real_time_events_keep_their_rate_at_every_rate() {
        for rate in [0.01, 0.3, 1.16, 4.9, 5.0, 7.5, 1000.0] {
            let clock = TestClock::default();
            let pace = Pace::with_clock(clock.clone(), rate, true, None);
            let mut generator = Generator::new(GeneratorConfig {
                rate,
                events: Some(10),
                simulated_start_ms: None,
                speedup: None,
                ..config(0.0)
            });
            let mut out = Stamped {
                clock: clock.clone(),
                lines_at: Vec::new(),
            };
            generator
                .write_paced(&mut out, &AtomicBool::new(false), &pace)
                .unwrap();
            assert_eq!(out.lines_at.len(), 10, "at {rate}/s");
            for (i, at) in out.lines_at.iter().enumerate() {
                let due = Duration::from_secs_f64(i as f64 / rate);
                assert!(
                    close(*at, due),
                    "at {rate}/s event {i} at {at:?}, due {due:?}"
                );
            }
            let took = clock.elapsed();
            assert!(
                close(took, Duration::from_secs_f64(10.0 / rate)),
                "at {rate}/s 10 events took {took:?}"
            );
            assert!(clock.sleeps.borrow().iter().all(|s| *s <= WAIT_SLICE));
        }
    }

    #[test]
    fn a_stop_ends_a_long_wait_within_a_slice() {
        let clock = TestClock::default();
        let pace = Pace::with_clock(clock.clone(), 0.01, true, None);
        let stop = AtomicBool::new(false);
        let mut slices = 0;
        let waited = pace.wait_for(1, &stop, || {
            slices += 1;
            if slices == 3 {
                stop.store(true, Ordering::Relaxed);
            }
        });
        assert!(!waited, "stopped before event 1 was due at 100 s");
        assert_eq!(clock.elapsed(), 3 * WAIT_SLICE);
        assert!(
            pace.wait_for(0, &AtomicBool::new(false), || {}),
            "event 0 is due at once"
        );
    }

    #[test]
    fn simulated_time_waits_only_for_the_clock() {
        let clock = TestClock {
            epoch_ms: 1_700_000_000_000,
            ..TestClock::default()
        };
        // An hour behind the clock at 0.01/s: 37 events are due at once.
        let simulated = Simulated {
            start_ms: 1_700_000_000_000 - 3_600_000,
            rate: 0.01,
        };
        let pace = Pace::with_clock(clock.clone(), 0.01, false, Some(simulated));
        assert!(pace.wait_for(36, &AtomicBool::new(false), || {}));
        assert_eq!(clock.elapsed(), Duration::ZERO);
        assert_eq!(pace.due(5), 37);
        // Event 37 is at the clock's time plus 100 s: it waits for the clock.
        assert!(pace.wait_for(37, &AtomicBool::new(false), || {}));
        assert_eq!(clock.elapsed(), Duration::from_secs(100));
        assert_eq!(simulated.time_of(37), clock.epoch_ms());
        assert_eq!(pace.due(37), 38);
        let unbounded = Pace::with_clock(clock.clone(), 0.01, false, None);
        assert_eq!(unbounded.due(5), u64::MAX);
    }

    #[test]
    fn simulated_time_ends_at_the_clock_or_starts_a_day_back() {
        let now = 1_765_100_000_000;
        assert_eq!(simulated_start(now, 1000.0, Some(10_001)), now - 10_000);
        assert_eq!(simulated_start(now, 1.16, None), now - 24 * 3_600_000);
        assert_eq!(simulated_start(now, 0.01, Some(u64::MAX)), EARLIEST_MS);
        let start = simulated_start(now, 1000.0, Some(20_000));
        let generator = Generator::new(GeneratorConfig {
            simulated_start_ms: Some(start),
            ..config(0.0)
        });
        let last = generator.simulated().unwrap().time_of(19_999);
        assert_eq!(
            last, now,
            "the last of 20,000 events is at the clock's time"
        );
    }

    #[test]
    fn sped_up_simulated_time_is_paced_at_rate_times_speedup() {
        let sped_up = Generator::new(GeneratorConfig {
            rate: 1.16,
            speedup: Some(60.0),
            ..config(0.0)
        });
        let pace = sped_up.pace();
        assert!(pace.is_real_time());
        assert!((pace.rate - 69.6).abs() < 1e-9, "{}", pace.rate);
        let fastest = Generator::new(config(0.0)).pace();
        assert!(!fastest.is_real_time());
    }

    fn config(malformed_share: f64) -> GeneratorConfig {
        GeneratorConfig {
            rate: 1000.0,
            events: Some(20_000),
            seed: 7,
            malformed_share,
            late_share: 0.0,
            jitter_ms: 0,
            simulated_start_ms: Some(1_700_000_000_000),
            speedup: None,
        }
    }

    fn lines(config: GeneratorConfig) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        Generator::new(config)
            .write_to(&mut out, &AtomicBool::new(false))
            .unwrap();
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn valid_events_follow_the_spec_distributions() {
        let lines = lines(config(0.0));
        assert_eq!(lines.len(), 20_000);
        let mut postcodes: HashMap<String, usize> = HashMap::new();
        let mut last_ts = 0;
        for line in &lines {
            let pv = validate(line).expect("generator makes valid events");
            assert!((1..=MAX_USER_ID).contains(&pv.user_id));
            assert!(pv.timestamp >= last_ts, "simulated time only advances");
            last_ts = pv.timestamp;
            *postcodes.entry(pv.postcode.into_owned()).or_default() += 1;
        }
        assert_eq!(last_ts, 1_700_000_000_000 + 19_999);
        // Zipf 1/i^1.5: SW19 is about 2.8 times as common as E1.
        let ratio = postcodes["SW19"] as f64 / postcodes["E1"] as f64;
        assert!((2.4..3.3).contains(&ratio), "{ratio}");
        assert_eq!(postcodes.len(), POSTCODES.len());
    }

    #[test]
    fn malformed_events_cover_every_payload_error_kind() {
        let lines = lines(config(0.5));
        let mut kinds: HashMap<ErrorKind, usize> = HashMap::new();
        for line in &lines {
            if let Err(r) = validate(line) {
                *kinds.entry(r.kind).or_default() += 1;
            }
        }
        let broken: usize = kinds.values().sum();
        assert!((9_000..11_000).contains(&broken), "{broken}");
        for kind in ErrorKind::ALL
            .into_iter()
            .filter(|k| ![ErrorKind::LateEvent, ErrorKind::FutureTimestamp].contains(k))
        {
            assert!(
                kinds.get(&kind).copied().unwrap_or(0) > 1_000,
                "{kind}: {kinds:?}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        assert_eq!(lines(config(0.1)), lines(config(0.1)));
        let mut other = config(0.1);
        other.seed = 8;
        assert_ne!(lines(config(0.1)), lines(other));
    }

    #[test]
    fn late_and_jittered_events_move_back_in_time() {
        let mut c = config(0.0);
        c.late_share = 0.1;
        c.jitter_ms = 3_000;
        let lines = lines(c);
        let late = lines
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                let ts = validate(l).unwrap().timestamp;
                let on_time = 1_700_000_000_000 + *i as i64;
                assert!(ts <= on_time);
                on_time - ts > 3_000
            })
            .count();
        assert!((1_500..2_500).contains(&late), "{late}");
    }
}
