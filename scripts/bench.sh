#!/usr/bin/env bash
# make bench / make bench-quick: tractor against the servers users would pick instead (KServe's ModelServer,
# Seldon's MLServer, BentoML, Ray Serve), each serving the same ONNX models through onnxruntime on the same pinned
# core, driven by wrk, vegeta and ghz on the other core. Writes docs/bench/REPORT.md and docs/bench/*.png; the work
# files (logs, request bodies, results.json) go to bench/peers/ (ignored by git).
#
#   scripts/bench.sh [--quick]
#
# Installs what it needs, cached under ~/.cache/tractor/ (TRACTOR_CACHE): one venv per peer and one for the driver
# (scripts/peers/*/requirements.txt, scripts/bench-peers-requirements.txt; each keyed by its requirements file),
# the load generators (scripts/bench-tools.sh), the generated models. --quick is the same bench at 2 s a cell and
# one start per server (~10 minutes on 2 cores once installed); the full run takes 10 s cells and 3 starts.
# Environment: TRACTOR_BIN (a tractor binary to bench instead of building the release one), BENCH_SERVERS, BENCH_MODELS (comma-separated subsets), BENCH_SERVER_CPUS (default 0),
# BENCH_LOADGEN_CPUS (default 1). Goals are reported, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tractor/target}
cache=${TRACTOR_CACHE:-$HOME/.cache/tractor}
venvs="$cache/bench-peers"
out=bench/peers
quick=()
case "${1:-}" in
  --quick) quick=(--quick) ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if (($(nproc) < 2)); then
  echo "$0: needs 2 CPUs or more (one for the server, one for the load generator); this machine has $(nproc)" >&2
  exit 1
fi
command -v taskset >/dev/null || { echo "$0: taskset (util-linux) is missing" >&2; exit 1; }
mkdir -p "$out/bin" "$venvs"

bin=${TRACTOR_BIN:-}
if [[ -z "$bin" ]]; then
  log "cargo build --release -p tractor"
  cargo build --locked --release -q -p tractor
  bin="$CARGO_TARGET_DIR/release/tractor"
fi
# A copy: a concurrent build replacing target/release/tractor must not change the server mid-run.
cp -fp "$bin" "$out/bin/tractor.new"
mv -f "$out/bin/tractor.new" "$out/bin/tractor"
scripts/image.sh --bin "$out/bin/tractor" --out "$out/tractor.oci.tar" >/dev/null

log "load generators"
scripts/bench-tools.sh >"$out/tools.txt"

log "venvs (the first run installs ~2.3 GB from PyPI; later runs reuse them)"
scripts/python-env.sh scripts/bench-peers-requirements.txt "$venvs/driver-venv"
for peer in kserve mlserver bentoml ray; do
  scripts/python-env.sh "scripts/peers/$peer/requirements.txt" "$venvs/$peer-venv"
done

log "bench${quick:+ (quick)}"
args=(--tractor "$out/bin/tractor" --venvs "$venvs" --tools "$out/tools.txt" --out "$out"
      --models-dir "$cache/bench-peers/models" --image "$out/tractor.oci.tar"
      --server-cpus "${BENCH_SERVER_CPUS:-0}" --loadgen-cpus "${BENCH_LOADGEN_CPUS:-1}")
[[ -n "${BENCH_SERVERS:-}" ]] && args+=(--servers "$BENCH_SERVERS")
[[ -n "${BENCH_MODELS:-}" ]] && args+=(--models "$BENCH_MODELS")
"$venvs/driver-venv/bin/python" scripts/bench_peers.py "${args[@]}" "${quick[@]}"
echo "report: docs/bench/REPORT.md"
