#!/usr/bin/env bash
# A day of the original's traffic (100,000 events at 1.16/s) through a 3-partition topic, in
# SPEEDUP times less wall time, into Parquet folders and Delta tables at once (two processors,
# one group each, reading the same topic); then how many data files each layout leaves per
# hour and how long polars takes to read the day from each.
#
# The day is compressed without changing what makes files: the generator paces events
# SPEEDUP times as fast as 1.16/s with event times 1/1.16 s apart, and FILE_MAX_AGE_MS and
# CHECKPOINT_INTERVAL_MS (10 s each) and the compaction interval (60 s) are divided by
# SPEEDUP, so a file rolls after the same share of an event-hour as it would in real time.
#
# usage: scripts/bench-lake-day.sh BOOTSTRAP [SPEEDUP] [DIR]
#   BOOTSTRAP  a broker, e.g. 127.0.0.1:19092 from `scripts/kafka-broker.sh 19092 &`
#   SPEEDUP    60 (the day in 24 minutes) by default; at most 100, as checkpoints are at
#              least 100 ms apart
#   DIR        where the two lakes go, /tmp/pageview-day by default (emptied first)
# PAGEVIEW (the binary, target/release/pageview by default), PYTHON (with polars and
# deltalake; ~/.cache/pageview/py/bin/python by default) and EVENTS (100000) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
bootstrap="$1"
speedup="${2:-60}"
dir="${3:-/tmp/pageview-day}"
pageview="${PAGEVIEW:-target/release/pageview}"
python="${PYTHON:-$HOME/.cache/pageview/py/bin/python}"
events="${EVENTS:-100000}"
if [ "$speedup" -lt 1 ] || [ "$speedup" -gt 100 ]; then
    echo "SPEEDUP must be 1 to 100, not $speedup" >&2
    exit 2
fi
topic="pageview-day-$(date +%s)"
# Midnight UTC of a day: the day's 24 hours are its 24 raw partitions.
start_ms=1700006400000
every=$((10000 / speedup))
compact=$((60000 / speedup))

rm -rf "$dir"
mkdir -p "$dir"
# Starts a processor in the background (its pid in $!).
process() {
    local name="$1"
    shift
    "$pageview" process --bootstrap-servers "$bootstrap" --topic "$topic" \
        --group "$topic-$name" --storage "$dir/$name" \
        --file-max-age-ms "$every" --checkpoint-interval-ms "$every" \
        --metrics-port 0 "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
}
# The processors wait for the topic, which the generator creates with 3 partitions.
process parquet
parquet=$!
process delta --table-format delta --compact-interval-ms "$compact"
delta=$!
trap 'kill $parquet $delta 2>/dev/null || true' EXIT
sleep 2
for name in parquet delta; do
    pid=${!name}
    kill -0 "$pid" 2>/dev/null || { echo "the $name processor stopped:" >&2; cat "$dir/$name.log" >&2; exit 1; }
done
started=$(date +%s)
echo "== producing $events events at 1.16/s of event time, ${speedup}x to $topic (about $((events * 100 / 116 / speedup / 60)) minutes)"
"$pageview" generate --bootstrap-servers "$bootstrap" --topic "$topic" --rate 1.16 \
    --events "$events" --simulated-time --start-time-ms "$start_ms" \
    --speedup "$speedup" --seed 1 --malformed-share 0.01 2>"$dir/generate.log"
# Both read to the end and publish everything on SIGTERM.
sleep 10
kill -TERM "$parquet" "$delta"
wait "$parquet" "$delta"
trap - EXIT
echo "== produced and processed in $(($(date +%s) - started)) s"

report() {
"$python" - "$dir" "$1" <<'PY'
import collections, glob, os, sys, time
import polars as pl
from deltalake import DeltaTable

root = sys.argv[1]
raw = "pageview-pipeline-local-raw-events"
hours = lambda paths: collections.Counter(os.path.dirname(p) for p in paths)

folder = f"{root}/parquet/{raw}"
parquet_files = [os.path.relpath(p, folder) for p in glob.glob(f"{folder}/**/*.parquet", recursive=True)]
table = f"{root}/delta/{raw}"
delta_files = [os.path.relpath(uri.removeprefix("file://"), table)
               for uri in DeltaTable(table).file_uris()]

def best_of(read, n=5):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        rows = read().height
        times.append(time.perf_counter() - t)
    return rows, min(times)

p_rows, p_secs = best_of(lambda: pl.read_parquet(f"{folder}/**/*.parquet", hive_partitioning=True))
d_rows, d_secs = best_of(lambda: pl.read_delta(table))
ph, dh = hours(parquet_files), hours(delta_files)
for name, h, files, rows, secs in [("parquet", ph, parquet_files, p_rows, p_secs),
                                   (f"delta, {sys.argv[2]}", dh, delta_files, d_rows, d_secs)]:
    counts = sorted(h.values())
    print(f"| {name} | {rows} | {len(files)} | {len(h)} | {counts[len(counts) // 2]}, {counts[-1]} | {secs * 1000:.0f} ms |")
print("delta files per hour:", " ".join(str(dh[k]) for k in sorted(dh)))
PY
}
echo "| layout | raw rows | data files | hour partitions | files per hour: median, max | polars read of the day (best of 5) |"
echo "|---|---|---|---|---|---|"
report "as the processor left it"
"$pageview" compact --storage "$dir/delta" >/dev/null
report "after pageview compact"
