#!/usr/bin/env bash
# Memory over time: events at RATE a second (3,000 by default) from the generator into a
# 3-partition topic, one processor writing Delta tables (default compaction, 10 s checkpoints)
# for MINUTES minutes (60 by default). Prints the processor's resident memory every SAMPLE
# seconds (60), with its peak so far and the raw table's log version (a Delta checkpoint every
# 100 versions), then the highest.
#
# usage: scripts/soak.sh BOOTSTRAP [MINUTES] [DIR]
#   BOOTSTRAP  a broker, e.g. 127.0.0.1:19092 from `scripts/kafka-broker.sh 19092 &`
#   DIR        where the tables go, /tmp/pageview-soak by default (emptied first)
# PAGEVIEW (the binary, target/release/pageview by default), RATE and SAMPLE can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
bootstrap="$1"
minutes="${2:-60}"
dir="${3:-/tmp/pageview-soak}"
pageview="${PAGEVIEW:-target/release/pageview}"
rate="${RATE:-3000}"
sample="${SAMPLE:-60}"
topic="pageview-soak-$(date +%s)"
rm -rf "$dir"
mkdir -p "$dir"
"$pageview" process --bootstrap-servers "$bootstrap" --topic "$topic" --group "$topic" \
    --storage "$dir/lake" --table-format delta --metrics-port 0 \
    >"$dir/process.out" 2>"$dir/process.log" &
processor=$!
"$pageview" generate --bootstrap-servers "$bootstrap" --topic "$topic" --rate "$rate" \
    >"$dir/generate.out" 2>"$dir/generate.log" &
generator=$!
trap 'kill $generator $processor 2>/dev/null || true' EXIT
raw_log="$dir/lake/pageview-pipeline-local-raw-events/_delta_log"
# A status line's field, in MiB.
mib() { awk -v f="$1:" '$1 == f { printf "%d", $2 / 1024 }' "/proc/$processor/status"; }
echo "rate $rate events/s into $topic, Delta tables in $dir/lake, $minutes minutes"
echo "| minute | RSS MiB | peak RSS MiB | raw table version |"
echo "|---|---|---|---|"
started=$(date +%s)
deadline=$((started + minutes * 60))
while [ "$(date +%s)" -lt "$deadline" ]; do
    sleep "$sample"
    kill -0 "$processor" 2>/dev/null || { echo "the processor stopped:" >&2; tail -5 "$dir/process.log" >&2; exit 1; }
    kill -0 "$generator" 2>/dev/null || { echo "the generator stopped:" >&2; tail -5 "$dir/generate.log" >&2; exit 1; }
    version=$(ls "$raw_log" 2>/dev/null | grep -c '\.json$' || true)
    minute=$(awk -v s="$(($(date +%s) - started))" 'BEGIN { printf "%.1f", s / 60 }')
    echo "| $minute | $(mib VmRSS) | $(mib VmHWM) | $((version - 1)) |"
done
peak=$(mib VmHWM)
kill "$generator"
kill -TERM "$processor"
wait "$processor" || true
trap - EXIT
echo "peak RSS over $minutes minutes: $peak MiB"
