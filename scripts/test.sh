#!/usr/bin/env bash
# Runs every check and test. Installs what the tests need (Python with pyarrow and duckdb)
# into ~/.cache/pageview, and builds there too, so later runs are fast and the clone stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${PAGEVIEW_CACHE:-$HOME/.cache/pageview}"
mkdir -p "$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

# Python readers for tests/readers.rs: the datasets must open in pyarrow and DuckDB.
py="$cache/py"
if ! "$py/bin/python" -c 'import pyarrow, duckdb' 2>/dev/null; then
    echo "== installing pyarrow and duckdb into $py"
    python3 -m venv "$py"
    "$py/bin/pip" install -q --disable-pip-version-check 'pyarrow>=15' 'duckdb>=1.0'
fi
export PAGEVIEW_PYTHON="$py/bin/python"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
