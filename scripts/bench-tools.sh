#!/usr/bin/env bash
# Installs (or reuses) the load generators `make bench` drives: wrk from Debian (closed loop, HTTP/1.1),
# vegeta (open loop at a fixed rate) and ghz (gRPC) from the Go module proxy, at pinned versions, into
# ${TRACTOR_CACHE:-~/.cache/tractor}/bin/<tool>-<version>/ so fresh clones and later runs reuse them.
# Prints one `NAME=PATH` line per tool on stdout (`wrk`, `vegeta`, `ghz`); progress goes to stderr.
#   TRACTOR_NO_APT=1  never call apt-get (fail if wrk is missing)
set -euo pipefail

VEGETA_VERSION=v12.13.0
GHZ_VERSION=v0.121.0
CACHE=${TRACTOR_CACHE:-$HOME/.cache/tractor}

log() { printf '[bench-tools] %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null; then
  if [[ "${TRACTOR_NO_APT:-0}" == 1 ]]; then
    log "wrk is missing (TRACTOR_NO_APT=1, not installing)"; exit 1
  fi
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  log "installing wrk from Debian"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

# go_tool NAME MODULE_PACKAGE VERSION: `go install` into a folder named for the version, through a
# temporary GOBIN, so an interrupted install never leaves a binary a later run would trust.
go_tool() {
  local name=$1 package=$2 version=$3
  local dir="$CACHE/bin/$name-$version"
  if [[ ! -x "$dir/$name" ]]; then
    command -v go >/dev/null || { log "go not found on PATH (needed for $name)"; exit 1; }
    log "$name $version: go install $package@$version (a minute or two the first time)"
    local tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$package@$version"
    mkdir -p "$dir"
    mv -f "$tmp/$name" "$dir/$name"   # same filesystem: a rename
    rm -rf "$tmp"
  fi
  echo "$name=$dir/$name"
}

echo "wrk=$(command -v wrk)"
go_tool vegeta github.com/tsenart/vegeta/v12 "$VEGETA_VERSION"
go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION"
