#!/usr/bin/env bash
# make bench-optimize: for each fixture, run `tractor optimize --precision auto` with its labelled set and collect,
# per candidate precision, latency at batch 1 and 32 (medians, from the binary's JSON log), artifact size, score,
# gate result and what auto chose; then tree ensembles, tractor against onnxruntime at batch 1 and 256. Writes
# $OUT/report.md and $OUT/runs/*.json. Never gates on a time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TRACTOR_BIN:-$CARGO_TARGET_DIR/release/tractor}
OUT=${BENCH_OUT:-$CARGO_TARGET_DIR/bench-optimize}
mkdir -p "$OUT/runs"
for m in digits_mlp breast_cancer_logreg dense; do
  for p in f32 f16 int8; do
    "$BIN" --log-format json optimize --source "tests/fixtures/$m.onnx" --precision "$p" \
      --eval-data "tests/fixtures/${m}_test.npz" --metric accuracy --max-regression 1 \
      --out "$OUT/runs/$m-$p" --report "$OUT/runs/$m-$p.report.json" >/dev/null 2>"$OUT/runs/$m-$p.log" || true
  done
  "$BIN" --log-format json optimize --source "tests/fixtures/$m.onnx" --precision auto \
    --eval-data "tests/fixtures/${m}_test.npz" --metric accuracy \
    --out "$OUT/runs/$m-auto" --report "$OUT/runs/$m-auto.report.json" >/dev/null 2>"$OUT/runs/$m-auto.log" || true
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); runs = out / "runs"
lines = ["# tractor optimize benchmark", "",
         "Latency: median of one run, tract, this machine, from the auto run's timing of each candidate.", "",
         "| model | precision | batch 1 (µs) | batch 32 (µs) | size (bytes) | accuracy | passed | auto chose |",
         "|---|---|---:|---:|---:|---:|---|---|"]
for m in ["digits_mlp", "breast_cancer_logreg", "dense"]:
    auto = json.loads((runs / f"{m}-auto.report.json").read_text())
    lat = {}
    for line in (runs / f"{m}-auto.log").read_text().splitlines():
        try: ev = json.loads(line)
        except ValueError: continue
        f = ev.get("fields", {})
        if f.get("message") == "candidate measured":
            lat[f["precision"].lower()] = f.get("latencies_micros", "")
    for p in ["f32", "f16", "int8"]:
        r = json.loads((runs / f"{m}-{p}.report.json").read_text())
        l = lat.get(p, "[]").strip("[]").split(",")
        l = [x.strip() for x in l] + ["", ""]
        lines.append(f"| {m} | {p} | {l[0]} | {l[1]} | {r.get('sizeBytes','')} | {r.get('optimizedScore','')} | "
                     f"{next((c['passed'] for c in auto.get('candidates', []) if c['precision']==p), '')} | "
                     f"{'**yes**' if auto.get('precision')==p else ''} |")
(out / "report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
# Tree ensembles: tractor's evaluator against onnxruntime at batch 1 and 256, same rows, same run
# (scripts/bench-trees.py trains the forests and times onnxruntime; the bench_trees example times tractor).
scripts/python-env.sh
cargo build --locked --release -q -p tractor-model --example bench_trees
"${TRACTOR_VENV:-$HOME/.cache/tractor/venv}/bin/python" scripts/bench-trees.py "$OUT/trees" \
  "$CARGO_TARGET_DIR/release/examples/bench_trees" | tee -a "$OUT/report.md"
echo "report: $OUT/report.md"
