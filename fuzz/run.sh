#!/usr/bin/env bash
# fuzz/run.sh TARGET [SECONDS] [libFuzzer options...]
#   Builds the fuzz targets (libFuzzer + address sanitizer, debug) and runs TARGET
#   (json, frame, store, token, answers) for SECONDS (600) on its corpus, fuzz/corpus/TARGET.
#   New inputs go to fuzz/.build-fuzz/corpus/TARGET (not the repository); crashes,
#   hangs and leaks to fuzz/artifacts/TARGET/. Exits non-zero when the target failed.
#   fuzz/run.sh build       only builds (the targets and the seed writer fuzz-seeds).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
swift="${SWIFT:-swift}"
target="${1:?usage: fuzz/run.sh json|frame|store|token|answers|build [SECONDS] [libFuzzer options]}"
seconds="${2:-600}"
shift $(( $# >= 2 ? 2 : 1 ))
scratch="$here/.build-fuzz"

# The node's dependencies at the versions the node builds with.
[ -f "$here/Package.resolved" ] || { [ -f "$here/../Package.resolved" ] && cp "$here/../Package.resolved" "$here/Package.resolved"; } || true

build() {
  EKC_FUZZ=1 "$swift" build -c debug --package-path "$here" --scratch-path "$scratch" \
    -Xswiftc -sanitize=fuzzer,address "$@"
}

if [ "$target" = build ]; then
  # fuzz-seeds too, so that the seed writer cannot stop compiling unnoticed.
  for t in json frame store token answers seeds; do build --product "fuzz-$t"; done
  exit 0
fi
case "$target" in json|frame|store|token|answers) ;; *) echo "unknown target $target" >&2; exit 2 ;; esac
build --product "fuzz-$target"

corpus="$here/corpus/$target"
work="$scratch/corpus/$target"
artifacts="$here/artifacts/$target"
mkdir -p "$work" "$artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=1}"
# The Swift runtime's own backtracer reads memory ASan reports as overflows; libFuzzer reports instead.
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-enable=no}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/lsan.supp:print_suppressions=0}"
# New coverage is written to the first folder (outside the repository); the seeds are read.
exec "$scratch/debug/fuzz-$target" "$work" "$corpus" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@"
