#!/usr/bin/env bash
# Builds (or reuses) the gitops-health helper: Flux's kstatus and Argo CD's health assessment on live objects.
#
#   tests/gitops-health/build.sh          build if missing; print the binary's path
#   tests/gitops-health/build.sh --path   print the path only (builds nothing)
#
# The binary lands in ${TRACTOR_CACHE:-$HOME/.cache/tractor}/gitops-health/<hash>/gitops-health, where <hash>
# covers go.mod, go.sum, the sources and BUILD_REV, so fresh clones (CI) reuse a warm one.
# Cold (empty Go build cache): about 3 minutes on 2 cores; cached: well under a second.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BUILD_REV=1
hash=$( (cat "$here"/go.mod "$here"/go.sum "$here"/*.go; echo "rev $BUILD_REV") | sha256sum | cut -c1-12)
out="${TRACTOR_CACHE:-$HOME/.cache/tractor}/gitops-health/$hash/gitops-health"
if [[ "${1:-}" == "--path" ]]; then
  echo "$out"
  exit 0
fi
if [[ ! -x "$out" ]]; then
  mkdir -p "$(dirname "$out")"
  t0=$SECONDS
  echo "[gitops-health] building (cold builds take minutes)" >&2
  # Written under a temporary name and renamed, so an interrupted build is never taken for a finished one.
  (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
  mv -f "$out.tmp" "$out"
  echo "[gitops-health] built in $((SECONDS - t0))s" >&2
fi
echo "$out"
