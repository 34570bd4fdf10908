#!/usr/bin/env bash
# Regenerates Sources/Wire/Generated from proto/ with Debian's protoc and the
# protoc-gen-swift of the swift-protobuf version this package resolves to.
#
#   ops/gen-proto.sh          regenerate (idempotent: a rerun changes no byte)
#   ops/gen-proto.sh --check  regenerate into a temporary folder and fail if the
#                             committed code differs
#
# protoc-gen-swift is built once, in debug, from SwiftPM's checkout of
# swift-protobuf, into the git-ignored scratch folder .build-protoc (not .build,
# so it never takes the main build's lock). CI does not run this script: the
# generated code is committed. Needs: protoc (Debian package protobuf-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
[ "${1:-}" = "--check" ] && check=1

command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

# The swift-protobuf checkout SwiftPM resolved for this package.
src=.build/checkouts/swift-protobuf
if [ ! -f "$src/Package.swift" ]; then
    swift package resolve >/dev/null
fi
[ -f "$src/Package.swift" ] || { echo "no swift-protobuf checkout in $src" >&2; exit 1; }
version=$(git -C "$src" describe --tags --exact-match 2>/dev/null || git -C "$src" rev-parse --short HEAD)

scratch=.build-protoc
plugin="$scratch/debug/protoc-gen-swift"
stamp="$scratch/protoc-gen-swift.version"
if [ ! -x "$plugin" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
    echo "building protoc-gen-swift $version into $scratch" >&2
    swift build --package-path "$src" --scratch-path "$scratch" --product protoc-gen-swift >&2
    echo "$version" >"$stamp"
fi

out=Sources/Wire/Generated
dest=$out
if [ $check = 1 ]; then
    dest=$(mktemp -d)
    trap 'rm -rf "$dest"' EXIT
fi
mkdir -p "$dest"

# Every .proto under proto/, in a stable order, relative to proto/ (the import root).
mapfile -t files < <(cd proto && find . -name '*.proto' -printf '%P\n' | LC_ALL=C sort)
[ ${#files[@]} -gt 0 ] || { echo "no .proto files under proto/" >&2; exit 1; }

tmp=$(mktemp -d)
protoc --plugin=protoc-gen-swift="$plugin" \
       --proto_path=proto \
       --swift_opt=Visibility=Public \
       --swift_opt=FileNaming=PathToUnderscores \
       --swift_out="$tmp" \
       "${files[@]}"

# Replace the folder's .pb.swift files with the new set, so a removed .proto
# leaves no stale code behind; files whose bytes are unchanged are not touched.
for f in "$dest"/*.pb.swift; do
    [ -e "$f" ] || continue
    [ -e "$tmp/$(basename "$f")" ] || rm -f "$f"
done
for f in "$tmp"/*.pb.swift; do
    target="$dest/$(basename "$f")"
    cmp -s "$f" "$target" || cp "$f" "$target"
done
rm -rf "$tmp"

if [ $check = 1 ]; then
    if diff -r "$out" "$dest" >/dev/null; then
        echo "generated code is up to date (protoc $(protoc --version | cut -d' ' -f2), protoc-gen-swift $version)"
    else
        diff -ru "$out" "$dest" | head -40 >&2
        echo "Sources/Wire/Generated is stale: run ops/gen-proto.sh" >&2
        exit 1
    fi
else
    echo "generated: $(cd "$dest" && ls *.pb.swift | tr '\n' ' ')(protoc $(protoc --version | cut -d' ' -f2), protoc-gen-swift $version)"
fi
