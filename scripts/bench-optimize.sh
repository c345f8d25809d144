#!/usr/bin/env bash
# make bench-optimize: for each model, one `tractor optimize --precision auto` run with its labelled set gives, per
# candidate precision, latency at batch 1 and 32 (medians of interleaved timing, from the binary's JSON log: f32,
# f16 and int8 timed in the same run), artifact size, score, gate result and what auto chose; then auto again,
# AUTO_RUNS times in all, on the digits MLP and a generated ~25 M-parameter dense net, to show whether the same
# spec gives the same choice; then, on a 4 x 2560x2560 net, tractor-int8's integer layer against tract f32 for each
# weight scheme (the bench_linear example: what the served int8 kernel gains) and tract's own integer matmul against
# f32 (the int8_probe example: why int8 runs on a kernel of our own); then tree ensembles, tractor against
# onnxruntime at batch 1 and 256. Writes $OUT/report.md and $OUT/runs/*. Never gates on a time.
#
# int8 is served on tractor-int8's kernel (u8 activations quantized per row at run time x 7-bit weights, i32
# accumulation; AVX2 when the CPU has it, else its scalar loop); f32 on the kernels tract picks (named in the
# int8_probe section). Candidates that fail the gate are timed too, so the table shows what the gate turned down.
#
# BENCH_CPU=N pins every timed process to CPU N (taskset), so a neighbour's build moves less of the timings.
#
# Labelled sets: int8 is decided on >= 1,000 rows where it matters (a 0.5 % loss is then >= 5 rows): the digits MLP
# on all 1,797 digits, the 25 M net on 1,024 rows it labelled itself (scripts/bench-optimize-models.py says why);
# the small fixtures keep their test splits.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TRACTOR_BIN:-$CARGO_TARGET_DIR/release/tractor}
OUT=${BENCH_OUT:-$CARGO_TARGET_DIR/bench-optimize}
AUTO_RUNS=${AUTO_RUNS:-10}
# Generated once and kept: the 25 M net takes seconds to build and 105 MB to keep.
MODELS=${BENCH_MODELS:-$CARGO_TARGET_DIR/bench-optimize-models}
PYTHON="${TRACTOR_VENV:-$HOME/.cache/tractor/venv}/bin/python"
mkdir -p "$OUT/runs"
PIN=()
if [[ -n "${BENCH_CPU:-}" ]]; then PIN=(taskset -c "$BENCH_CPU"); fi
scripts/python-env.sh
"$PYTHON" scripts/bench-optimize-models.py "$MODELS"
# name, source, labelled set
MODELS_TABLE=(
  "digits_mlp tests/fixtures/digits_mlp.onnx $MODELS/digits_all.npz"
  "breast_cancer_logreg tests/fixtures/breast_cancer_logreg.onnx tests/fixtures/breast_cancer_logreg_test.npz"
  "dense tests/fixtures/dense.onnx tests/fixtures/dense_test.npz"
  "dense25m $MODELS/dense25m.onnx $MODELS/dense25m_eval.npz"
)
auto() { # name source data run
  "${PIN[@]}" "$BIN" --log-format json optimize --source "$2" --precision auto --batch-sizes 1,32 \
    --eval-data "$3" --metric accuracy \
    --out "$OUT/runs/$1-auto-$4" --report "$OUT/runs/$1-auto-$4.report.json" >/dev/null 2>"$OUT/runs/$1-auto-$4.log" || true
  rm -rf "$OUT/runs/$1-auto-$4" # the artifact: only its report and log are read
}
for row in "${MODELS_TABLE[@]}"; do
  read -r name source data <<<"$row"
  echo "[bench-optimize] $name: auto run 1"
  auto "$name" "$source" "$data" 1
done
for name in digits_mlp dense25m; do
  read -r _ source data <<<"$(printf '%s\n' "${MODELS_TABLE[@]}" | grep "^$name ")"
  for run in $(seq 2 "$AUTO_RUNS"); do
    echo "[bench-optimize] $name: auto run $run of $AUTO_RUNS"
    auto "$name" "$source" "$data" "$run"
  done
done
python3 - "$OUT" "$AUTO_RUNS" <<'PY'
import collections, json, sys, pathlib
out = pathlib.Path(sys.argv[1]); runs = out / "runs"; auto_runs = int(sys.argv[2])

def measured(name, run):
    """Per precision, the auto run's `candidate measured` fields."""
    found = {}
    for line in (runs / f"{name}-auto-{run}.log").read_text().splitlines():
        try: event = json.loads(line)
        except ValueError: continue
        fields = event.get("fields", {})
        if fields.get("message") == "candidate measured":
            found[fields["precision"].lower()] = fields
    return found

def micros(text):
    return [int(v) for v in str(text).strip("[]").split(",") if v.strip()]

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
isa = ", ".join(f"{f}: {'yes' if f in flags else 'no'}" for f in ["avx2", "avx512_vnni", "avx_vnni"])
lines = ["# tractor optimize benchmark", "",
         "One `--precision auto` run per model: every candidate timed in the same run, interleaved (median of runs "
         "in 5 rounds after a warm-up), single-threaded, this machine. Speed-up is f32's median over the "
         "candidate's. f32 and f16 run on tract's kernels; int8 on tractor-int8's (7-bit weights, activations "
         "quantized per row at run time). Candidates that failed the gate are timed too.", "",
         f"Machine: {cpu}; {isa}.", "",
         "| model | precision | batch 1 (µs) | batch 32 (µs) | × f32 b1 | × f32 b32 | size (bytes) | accuracy | passed | auto chose |",
         "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
for name in ["digits_mlp", "breast_cancer_logreg", "dense", "dense25m"]:
    report = json.loads((runs / f"{name}-auto-1.report.json").read_text())
    fields = measured(name, 1)
    base = micros(fields.get("f32", {}).get("latencies_micros", "[]"))
    for precision in ["f32", "f16", "int8"]:
        f = fields.get(precision, {})
        lat = micros(f.get("latencies_micros", "[]")) + [None, None]
        ratio = lambda i: f"{base[i] / lat[i]:.2f}" if lat[i] and len(base) > i else ""
        score = f.get("score", f.get("agreement", ""))
        lines.append(f"| {name} | {precision} | {lat[0] or ''} | {lat[1] or ''} | {ratio(0)} | {ratio(1)} | "
                     f"{f.get('size', '')} | {score} | {f.get('passed', '')} | "
                     f"{'**yes**' if report.get('precision') == precision else ''} |")
lines += ["", f"## auto, {auto_runs} runs on one machine", "",
          "| model | choices | messages |", "|---|---|---|"]
for name in ["digits_mlp", "dense25m"]:
    reports = [json.loads((runs / f"{name}-auto-{run}.report.json").read_text()) for run in range(1, auto_runs + 1)]
    choices = collections.Counter(r.get("precision", "failed") for r in reports)
    messages = collections.Counter(r.get("message", "") for r in reports)
    lines.append(f"| {name} | {', '.join(f'{p} ×{n}' for p, n in choices.most_common())} | "
                 f"{' / '.join(f'{m} (×{n})' for m, n in messages.most_common(3))} |")
(out / "report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
# The served int8 kernel against tract f32 on the dense net's shape (4 x 2560x2560 + bias + ReLU) for each weight
# scheme: I8 (8-bit weights), and the 7-bit I7 and U7 (U7 is what int8 artifacts are served with).
cargo build --locked --release -q -p tractor-int8 --features bench --example bench_linear
{ echo; echo "## tractor-int8's integer layer against tract f32 (int8 artifacts run U7)"; echo; echo '```'
  "${PIN[@]}" "$CARGO_TARGET_DIR/release/examples/bench_linear" 2>&1; echo '```'; } | tee -a "$OUT/report.md"
# tract's own integer path on the same shape of net, int8 against f32 at batch 1 and 32, with the kernels tract
# picks: why int8 runs on a kernel of our own (see the int8_probe example).
cargo build --locked --release -q -p tractor-optimize --example int8_probe
{ echo; echo "## tract's integer matmul (i8 x i8 -> i32 EinSum) against f32"; echo; echo '```'
  "${PIN[@]}" "$CARGO_TARGET_DIR/release/examples/int8_probe" 2>&1; echo '```'; } | tee -a "$OUT/report.md"
# Tree ensembles: tractor's evaluator against onnxruntime at batch 1 and 256, same rows, same run
# (scripts/bench-trees.py trains the forests and times onnxruntime; the bench_trees example times tractor).
cargo build --locked --release -q -p tractor-model --example bench_trees
"$PYTHON" scripts/bench-trees.py "$OUT/trees" \
  "$CARGO_TARGET_DIR/release/examples/bench_trees" | tee -a "$OUT/report.md"
echo "report: $OUT/report.md"
