#!/usr/bin/env bash
# Times `process` of builds and thread counts on one input, taking turns, so that a noisy
# machine disturbs each alike (docs/PERFORMANCE.md). Prints, per build and thread count, the
# best and median wall time and CPU time (user + system) and the highest peak RSS. Threads
# are given as THREADS, which a build from before `--threads` ignores.
#
#   scripts/compare-builds.sh INPUT ROUNDS BINARY:THREADS...
#   scripts/compare-builds.sh ~/.cache/pageview/bench/events-10000000.jsonl 6 \
#       /tmp/before:1 target/release/pageview:1 target/release/pageview:2
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
input=$1 rounds=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for _ in $(seq "$rounds"); do
    for spec in "$@"; do
        rm -rf "$work/lake"
        THREADS=${spec##*:} /usr/bin/time -o "$work/time" -f "%e %U %S %M" \
            "${spec%:*}" process --input "$input" --storage "$work/lake" >/dev/null 2>&1
        echo "$spec $(cat "$work/time")" >>"$work/samples"
    done
done
# The best and the median of a column of numbers.
best_median() { sort -n | awk '{ v[NR] = $1 } END { printf "best %.2f median %.2f", v[1], v[int((NR + 1) / 2)] }'; }
for spec in "$@"; do
    rows=$(grep -F "$spec " "$work/samples")
    wall=$(awk '{ print $2 }' <<<"$rows" | best_median)
    cpu=$(awk '{ print $3 + $4 }' <<<"$rows" | best_median)
    rss=$(awk '$5 > m { m = $5 } END { print int(m / 1024) }' <<<"$rows")
    echo "$spec  wall $wall s  cpu $cpu s  peak RSS $rss MiB"
done
