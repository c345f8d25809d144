#!/usr/bin/env bash
# make bench-coldstart: where a cold start goes and how it compares. Two parts, one run, one report:
#   process: `tractor serve` against KServe's Python ModelServer (onnxruntime) on the same two models, process
#            start -> ready and RSS (scripts/bench_coldstart_process.py);
#   pods:    pod created -> Ready on the real node, artifact store against re-derivation, and the first request
#            to a model at zero -> its answer
#            (scripts/bench_coldstart_pods.py), after `make demo` has installed tractor with Helm and the store.
# Both at precision f32 (KServe serves the f32 source; `auto` picks by noisy timings). BENCH_RUNS (default 5)
# starts of each. Writes $CARGO_TARGET_DIR/bench-coldstart/report.md. Goals are reported, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tractor/target}
runs=${BENCH_RUNS:-5}
out="$CARGO_TARGET_DIR/bench-coldstart"
venv="$HOME/.cache/tractor/bench-venv"
mkdir -p "$out"
scripts/python-env.sh scripts/bench-requirements.txt "$venv"
cargo build --locked --release -p tractor
# The demo's image is this release binary: the pods run what the process part measures.
scripts/demo.sh
"$venv/bin/python" scripts/bench_coldstart_process.py --tractor "$CARGO_TARGET_DIR/release/tractor" \
  --out "$out" --runs "$runs" --precision f32 --json "$out/process.json"
"$venv/bin/python" scripts/bench_coldstart_pods.py --out "$out" --runs "$runs" --json "$out/pods.json"
{
  echo "# bench-coldstart ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD))"
  echo
  cat "$out/process.md"
  echo
  cat "$out/pods.md"
} >"$out/report.md"
echo "report: $out/report.md"
