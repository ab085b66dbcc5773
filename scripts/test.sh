#!/usr/bin/env bash
# Runs every check and test. Installs what the tests need into ~/.cache/pageview (Python with
# pyarrow and duckdb, the Apache Kafka broker's jars, LocalStack), and builds there too, so
# later runs are fast and the clone stays clean. The build itself needs no system library:
# librdkafka's C dependencies are built from crate sources.
# Tests start and stop their own services (a Kafka broker or LocalStack on 127.0.0.1 per
# test, stopped by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${PAGEVIEW_CACHE:-$HOME/.cache/pageview}"
mkdir -p "$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

# Python readers for tests/it/readers.rs: the datasets must open in pyarrow and DuckDB, and the
# Delta tables in the deltalake package and polars.
py="$cache/py"
if ! "$py/bin/python" -c 'import pyarrow, duckdb, deltalake, polars' 2>/dev/null; then
    echo "== installing pyarrow, duckdb, deltalake and polars into $py"
    python3 -m venv "$py"
    "$py/bin/pip" install -q --disable-pip-version-check 'pyarrow>=15' 'duckdb>=1.0' \
        'deltalake>=1.0' 'polars>=1.0'
fi
export PAGEVIEW_PYTHON="$py/bin/python"

# Debian's docker-compose, which checks docker-compose.yml (tests/it/deploy.rs) without a Docker
# engine; Debian's Prometheus with promtool (tests/it/metrics.rs), started by the tests on
# 127.0.0.1 only; and Debian's chromium, which loads the status page headless
# (tests/it/metrics.rs).
missing=()
for pkg in docker-compose make prometheus chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The real Apache Kafka broker (KRaft) and its runtime dependencies, from Maven Central.
source scripts/kafka-jars.sh
export PAGEVIEW_KAFKA_LIBS="$kafka_libs"

# LocalStack, the S3 emulator, from PyPI.
source scripts/localstack-env.sh
export PAGEVIEW_LOCALSTACK_PYTHON="$localstack_python"

echo "== cargo fmt --check"
cargo fmt --check

# Clippy lints this crate while the tests are built, instead of in a check pass of its own
# (`cargo clippy` would type-check every dependency a second time, as metadata only).
# clippy-driver is rustc with Clippy's lints added; cargo runs it for this package only, and
# -D warnings fails the build on any warning, as `cargo clippy --all-targets -- -D warnings`
# does (dependencies' warnings are capped by cargo, as always).
export RUSTC_WORKSPACE_WRAPPER
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTFLAGS="-D warnings"
echo "== cargo clippy and build (every target)"
cargo test --locked --all-targets --no-run
# One test thread more than the cores: most tests spend their time waiting (for a broker, a
# session timeout, LocalStack), two threads kept 1.2 of 2 cores busy, and the longest test
# is under a minute, so the run ends when the sum of the tests' times, shared out, does
# (docs/PERFORMANCE.md, "Building from a fresh clone, faster"). RUST_TEST_THREADS wins.
threads="${RUST_TEST_THREADS:-$(( $(nproc) + 1 ))}"
echo "== cargo test ($threads test threads)"
cargo test --locked -- --test-threads="$threads"
