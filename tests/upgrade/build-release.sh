#!/usr/bin/env bash
# Builds the ekc binary of a previous release from its commit, in its own scratch folder
# (.build-upgrade/<release>/), and prints the binary's path. Built once: a later run finds
# the binary and its stamp and builds nothing. Usage: build-release.sh [RELEASE]
# (default: the last release in tests/upgrade/releases.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
list=tests/upgrade/releases.txt
release=${1:-$(grep -v '^#' "$list" | awk 'NF' | tail -1 | cut -d' ' -f1)}
commit=$(grep -v '^#' "$list" | awk -v r="$release" '$1 == r { print $2 }')
[ -n "$commit" ] || { echo "release $release is not in $list" >&2; exit 2; }
git cat-file -e "$commit^{commit}" 2>/dev/null || {
    echo "commit $commit of release $release is not in this clone (a shallow clone?): git fetch --unshallow" >&2; exit 2; }
dir=.build-upgrade/$release
bin=$dir/scratch/debug/ekc
if [ -x "$bin" ] && [ "$(cat "$dir/commit" 2>/dev/null)" = "$commit" ]; then echo "$bin"; exit 0; fi
rm -rf "$dir/src"
mkdir -p "$dir/src"
git archive "$commit" | tar -x -C "$dir/src"
echo "building ekc $release ($commit) into $dir (once)" >&2
swift build --package-path "$dir/src" --scratch-path "$dir/scratch" --product ekc >&2
echo "$commit" > "$dir/commit"
echo "$bin"
