#!/usr/bin/env bash
# Builds (or reuses) the SeaweedFS binary the optimize tests use as their real S3-compatible server, from the
# pinned wrapper Go module in this folder (Apache-2.0; MinIO is AGPL and stays out).
#
#   tests/s3/build.sh            build if missing, print the binary's path at the end
#   tests/s3/build.sh --bin      print the binary's path only (builds nothing)
#
# The binary lands in ${TRACTOR_CACHE:-$HOME/.cache/tractor}/s3/<hash>/weed, where <hash> covers go.mod/go.sum
# and BUILD_REV, so a version bump gets a fresh folder and warm caches are reused by fresh clones.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BUILD_REV=1
hash=$( (cat "$here"/go.{mod,sum}; echo "rev $BUILD_REV") | sha256sum | cut -c1-12)
CACHE=${TRACTOR_CACHE:-$HOME/.cache/tractor}
BIN="$CACHE/s3/$hash/weed"
if [[ "${1:-}" == "--bin" ]]; then echo "$BIN"; exit 0; fi
if [[ ! -x "$BIN" ]]; then
  command -v go >/dev/null || { echo "go not found on PATH" >&2; exit 1; }
  mkdir -p "$(dirname "$BIN")"
  echo "[s3 build] building SeaweedFS (a cold build takes many minutes on 2 cores)" >&2
  # Temp name then rename: an interrupted build never leaves a binary a later run would trust.
  (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" github.com/seaweedfs/seaweedfs/weed)
  mv -f "$BIN.tmp" "$BIN"
fi
echo "$BIN"
