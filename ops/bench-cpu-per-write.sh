#!/usr/bin/env bash
# CPU time of the store benchmark's writes, two builds side by side in one run, interleaved
# (task-clock from `perf stat`: less swayed by a busy machine than writes per second).
# Usage: ops/bench-cpu-per-write.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]
#   e.g. a release build of the commit before a change (git worktree) against this one.
# N=20000 grouped creates per run (plus 100 single ones and one read, the same in both).
set -euo pipefail
before=${1:?usage: ops/bench-cpu-per-write.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]}
after=${2:?usage: ops/bench-cpu-per-write.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]}
rounds=${3:-3}
N=${N:-20000}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 2; }
work=$(mktemp -d /tmp/ekc-cpu.XXXXXX)
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$rounds"); do
  for which in before after; do
    bin=$before; [ "$which" = after ] && bin=$after
    out=$(perf stat -e task-clock -x, -o "$work/perf" "$bin/ekc-bench" store --dir "$work/store" \
          --grouped "$N" --single 100 --reads 1 --threads 1)
    ms=$(grep task-clock "$work/perf" | cut -d, -f1)
    rate=$(echo "$out" | awk '/store.write.grouped/ {print $2}')
    printf 'round %d %-6s cpu %8.0f ms  %6.1f us/create  grouped %8s writes/s\n' "$round" "$which" "$ms" \
      "$(echo "$ms * 1000 / ($N + 100)" | bc -l)" "$rate"
    rm -rf "$work/store"
  done
done
