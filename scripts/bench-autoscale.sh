#!/usr/bin/env bash
# make bench-autoscale: the autoscaler's figures on real components (tractor serve scraped by the cluster's
# Prometheus, the chart's operator in-cluster, KWOK nodes), from the scale_throughput process test run longer:
# BENCH_CYCLES load steps (reaction: load step -> scale decision) and a BENCH_NOISE_SECS noisy-but-flat run
# (±5 % around four replicas' worth, tolerance 10 %; target: 0 scale changes). Writes $OUT/report.md and
# $OUT/autoscale.jsonl. Never gates on a time: the test's own assertions are the logical ones of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tractor/target}
OUT=${BENCH_OUT:-$CARGO_TARGET_DIR/bench-autoscale}
CYCLES=${BENCH_CYCLES:-3}
NOISE=${BENCH_NOISE_SECS:-600}
mkdir -p "$OUT"
# BENCH_REPORT_ONLY=1 rewrites report.md from the last run's autoscale.jsonl.
if [ "${BENCH_REPORT_ONLY:-0}" != 1 ]; then
  rm -f "$OUT/autoscale.jsonl"
  tests/cluster/cluster.sh up >/dev/null
  cargo build --locked -q -p tractor
  start=$(date +%s)
  TRACTOR_BENCH_OUT="$OUT" TRACTOR_SCALE_CYCLES="$CYCLES" TRACTOR_NOISE_SECS="$NOISE" \
    cargo test --locked -q -p tractor-e2e --test scale_throughput >"$OUT/test.log" 2>&1 ||
    { tail -40 "$OUT/test.log"; echo "scale_throughput failed: $OUT/test.log" >&2; exit 1; }
  echo "$(($(date +%s) - start))" >"$OUT/seconds"
fi
python3 - "$OUT" "$(cat "$OUT/seconds" 2>/dev/null || echo '?')" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "autoscale.jsonl").read_text().splitlines() if l.strip()]
react = [r for r in rows if r["figure"] == "reaction"]
down = [r for r in rows if r["figure"] == "scale_down"]
flat = [r for r in rows if r["figure"] == "noisy_flat"]
lines = ["# Autoscaler benchmark", "",
         f"Real `tractor serve` (debug build) scraped every 5 s by the cluster's Prometheus, the chart's operator in-cluster, "
         f"spec: throughput target 5 requests/s per replica, interval {react[0]['interval_s'] if react else '?'} s, "
         f"tolerance 0.1, scale-down window {down[0]['window_s'] if down else '?'} s. Load: 20 requests/s "
         f"(four replicas' worth) from one client. Whole run: {sys.argv[2]} s.", "",
         "## Reaction: load step (0 -> 20 requests/s) to the scale decision", "",
         "Seen by the test polling the status (kubectl, so up to ~0.5 s late), and from the status' own "
         "lastScaleTime (whole seconds, so up to 1 s early). Evaluations: those recorded after the step, the "
         "deciding one included. The rate window is four intervals (20 s), so a step ramps up through it: at one "
         "replica the reading passes the tolerance (5.5 requests/s) once ~6 s of the load are in the window, then "
         "waits up to one scrape (5 s) and one evaluation (5 s).", "",
         "| step | to the first decision, polled (s) | from lastScaleTime (s) | evaluations | first count | to 4 replicas, lastScaleTime (s) |",
         "|---:|---:|---:|---:|---:|---:|"]
fmt = lambda v: "" if v is None else f"{v:.0f}"
for r in react:
    lines.append(f"| {r['cycle'] + 1} | {r['step_to_decision_s']:.1f} | {fmt(r.get('step_to_decision_status_s'))} | "
                 f"{r['evaluations_until_decision']} | {r['first_count']} | {fmt(r.get('step_to_full_s'))} |")
if react:
    lines.append(f"\nMedian to the first decision: {statistics.median(r['step_to_decision_s'] for r in react):.1f} s.")
lines += ["", "## Scale-down after the load stops", "", "| step | stop to the first fall (s) | window (s) |", "|---:|---:|---:|"]
lines += [f"| {r['cycle'] + 1} | {r['stop_to_first_fall_s']:.0f} | {r['window_s']} |" for r in down]
lines += ["", "## Noisy but flat load", "",
          "| seconds | load | evaluations seen | scale changes | Scaling events | requests |", "|---:|---|---:|---:|---:|---:|"]
lines += [f"| {r['seconds']} | {r['rps']} requests/s ±{r['swing']*100:.0f} % (tolerance {r['tolerance']*100:.0f} %) | "
          f"{r['evaluations']} | **{r['scale_changes']}** | {r['scale_events']} | {r['requests']} |" for r in flat]
(out / "report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "report: $OUT/report.md"
