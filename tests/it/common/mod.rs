//! Helpers shared by the integration tests: the built binary and reading datasets back.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const RAW: &str = "pageview-pipeline-local-raw-events";
pub const AGGREGATED: &str = "pageview-pipeline-local-aggregated";
pub const DLQ: &str = "pageview-pipeline-local-dlq";

pub fn pageview() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pageview"))
}

/// Runs the binary and returns its output, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    pageview().args(args).output().expect("the binary runs")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Something `scripts/test.sh` installs: the path in `variable`, which the script sets, or
/// else where the script puts it under `~/.cache/pageview`.
pub fn installed(variable: &str, under_cache: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/pageview")
                .join(under_cache)
        })
}

/// The Python with pyarrow, DuckDB, deltalake and polars that the README's test command
/// installs.
pub fn readers_python() -> PathBuf {
    let path = installed("PAGEVIEW_PYTHON", "py/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs pyarrow, duckdb, deltalake and polars",
        path.display()
    );
    path
}

/// A port nothing listens on now, for a service a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every `.parquet` file under `dir`, sorted, paths relative to `dir`.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The files of the current version of the Delta table `bucket` under the folder `root`;
/// `None` when it holds no table.
pub fn table_files(root: &Path, bucket: &str) -> Option<Vec<pageview::storage::Listed>> {
    pageview::commit::current_files(&pageview::commit::TableRoot::Folder(root), bucket).unwrap()
}

/// Every batch of every file of one dataset, with the file it came from: of a Delta table,
/// the files its current version holds, as a reader of the table sees them.
pub fn read_dataset(root: &Path, bucket: &str) -> Vec<(PathBuf, RecordBatch)> {
    let dir = root.join(bucket);
    let files = match table_files(root, bucket) {
        Some(current) => current.into_iter().map(|f| PathBuf::from(f.path)).collect(),
        None => parquet_files(&dir),
    };
    files
        .into_iter()
        .flat_map(|rel| {
            let file = File::open(dir.join(&rel)).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            reader
                .map(|b| (rel.clone(), b.unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Nothing may be left in the staging area once a command has ended.
pub fn assert_no_staging_leftovers(root: &Path) {
    let staging = root.join(".staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging leftovers: {left:?}");
}

/// `pageview generate -o PATH --simulated-time ARGS…`, which must succeed: test input.
pub fn generate_file(path: &Path, args: &[&str]) {
    let mut all = vec!["generate", "-o", path.to_str().unwrap(), "--simulated-time"];
    all.extend_from_slice(args);
    let made = run(&all);
    assert!(made.status.success(), "{}", stderr(&made));
}

/// `pageview process --input INPUT --storage STORAGE EXTRA…`.
pub fn process(input: &Path, storage: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "process",
        "--input",
        input.to_str().unwrap(),
        "--storage",
        storage.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// `pageview process --input - --storage STORAGE`, to be given stdin and spawned.
pub fn process_stdin(storage: &Path) -> Command {
    let mut command = pageview();
    command.args([
        "process",
        "--input",
        "-",
        "--storage",
        storage.to_str().unwrap(),
    ]);
    command
}

/// Runs `command` with `input` as its stdin, to the end.
pub fn feed(mut command: Command, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Rows in one dataset.
pub fn rows(root: &Path, bucket: &str) -> usize {
    read_dataset(root, bucket)
        .iter()
        .map(|(_, b)| b.num_rows())
        .sum()
}

/// One DLQ row: the payload, its `error_kind` and its `error_message`.
#[derive(Debug)]
pub struct DeadLetterRow {
    pub payload: Vec<u8>,
    pub kind: String,
    pub message: String,
}

/// The DLQ's rows, in file order.
pub fn dead_letter_rows(root: &Path) -> Vec<DeadLetterRow> {
    use arrow_array::cast::AsArray;
    read_dataset(root, DLQ)
        .iter()
        .flat_map(|(_, b)| {
            let payloads = b.column(0).as_binary::<i32>();
            let kinds = b.column(1).as_string::<i32>();
            let messages = b.column(2).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| DeadLetterRow {
                    payload: payloads.value(i).to_vec(),
                    kind: kinds.value(i).to_string(),
                    message: messages.value(i).to_string(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// DLQ rows of one `error_kind`.
pub fn dead_letters_of(root: &Path, kind: &str) -> usize {
    dead_letter_rows(root)
        .iter()
        .filter(|row| row.kind == kind)
        .count()
}

/// The aggregated dataset: window start (ms) → (postcode, count), in file order.
pub fn window_counts(root: &Path) -> std::collections::BTreeMap<i64, Vec<(String, i64)>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMillisecondType};
    let mut windows = std::collections::BTreeMap::<i64, Vec<(String, i64)>>::new();
    for (_, batch) in read_dataset(root, AGGREGATED) {
        let starts = batch.column(0).as_primitive::<TimestampMillisecondType>();
        let postcodes = batch.column(2).as_string::<i32>();
        let counts = batch.column(3).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            windows
                .entry(starts.value(i))
                .or_default()
                .push((postcodes.value(i).to_string(), counts.value(i)));
        }
    }
    windows
}

/// Where the line `pageview: status page at http://ADDRESS/ …` says the binary serves.
pub fn status_address(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("pageview: status page at http://")?;
    rest.split('/').next()?.parse().ok()
}

/// `GET path` over HTTP/1.1: (status, body).
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Series (name with labels) → value, from Prometheus text.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of metric `name`, whatever its labels.
pub fn sum_of(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

pub mod kafka;
pub mod s3;

/// The error is one line that names the problem.
pub fn assert_one_line_error(output: &std::process::Output, names: &str) {
    assert!(!output.status.success(), "should fail");
    let err = stderr(output);
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines[0].contains(names), "{err:?} should name {names:?}");
    assert!(
        lines.len() == 1
            || lines[1..]
                .iter()
                .all(|l| l.contains("--help") || l.starts_with("Usage") || l.starts_with("  ")),
        "one error line, then at most a usage hint: {err:?}"
    );
}

/// Runs `command` for `running`, then stops it with SIGTERM, as Ctrl-C in a terminal would;
/// its output once it exited, which must be a success.
pub fn stopped_after(mut command: Command, running: Duration) -> Output {
    use std::process::Stdio;
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    std::thread::sleep(running);
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    output
}

/// Starts `command` with its stderr in `log`, to be read while it runs.
pub fn spawn_logged(mut command: Command, log: &Path) -> std::process::Child {
    use std::process::Stdio;
    let file = File::create(log).unwrap();
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("the binary runs")
}

/// Waits until `log` holds `needle`; fails after `within` with what it holds.
pub fn wait_for_log(log: &Path, needle: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in {within:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `command`, pointed at `servers` where nothing listens: it says at once where it
/// connects, then every 10 s that it still waits and why, until SIGTERM ends the wait.
pub fn assert_waits_for_unreachable_kafka(command: Command, servers: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let child = spawn_logged(command, &log);
    let said = wait_for_log(&log, "still waiting for Kafka", Duration::from_secs(60));
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        lines[0].contains(&format!("connecting to Kafka at {servers} (PLAINTEXT)")),
        "said at once: {said}"
    );
    assert!(
        lines[1].contains(&format!(
            "still waiting for Kafka at {servers}: no answer for 10 s"
        )),
        "{said}"
    );
    assert!(
        lines[1].contains("Connection refused"),
        "the client's own complaint: {said}"
    );
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.lines().last().unwrap_or_default().contains(&format!(
            "pageview: error: stopped while waiting for Kafka at {servers} to answer"
        )),
        "{said}"
    );
}
