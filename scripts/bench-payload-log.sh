#!/usr/bin/env bash
# make bench-payload-log: what payload logging costs `tractor serve`. The release server runs three ways in the same
# run: logging off, logging every call to a fast local sink, and logging every call to a sink that accepts
# connections and never answers. Each is measured closed-loop (wrk, BENCH_CONNECTIONS connections, as fast as it
# answers) and at a fixed rate (vegeta, BENCH_RATE requests/s), the modes interleaved over BENCH_ROUNDS rounds, and
# the median round of each is reported with its ratio against "off". Writes docs/bench/PAYLOAD-LOG.md; the work
# files (server logs, raw results) go to bench/payload-log/ (ignored by git).
#
#   scripts/bench-payload-log.sh
#
# Environment: TRACTOR_BIN (a tractor binary to bench instead of building the release one), BENCH_MODEL (a fixture
# under tests/fixtures/, default digits_mlp.onnx with its digits_mlp_test.json rows), BENCH_SECS (per measurement,
# default 10), BENCH_ROUNDS (default 3), BENCH_RATE (default 1000), BENCH_CONNECTIONS (default 8),
# BENCH_SERVER_CPUS (default 0), BENCH_LOADGEN_CPUS (default 1; the sinks run there too). Ratios are reported,
# never asserted: machines are noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tractor/target}
out=bench/payload-log
model=${BENCH_MODEL:-digits_mlp.onnx}
secs=${BENCH_SECS:-10}
rounds=${BENCH_ROUNDS:-3}
rate=${BENCH_RATE:-1000}
connections=${BENCH_CONNECTIONS:-8}
server_cpus=${BENCH_SERVER_CPUS:-0}
loadgen_cpus=${BENCH_LOADGEN_CPUS:-1}
log() { printf '[bench-payload-log %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if (($(nproc) < 2)); then
  echo "$0: needs 2 CPUs or more (one for the server, one for the load and the sinks); this machine has $(nproc)" >&2
  exit 1
fi
command -v taskset >/dev/null || { echo "$0: taskset (util-linux) is missing" >&2; exit 1; }
command -v python3 >/dev/null || { echo "$0: python3 is missing" >&2; exit 1; }
mkdir -p "$out/bin"

bin=${TRACTOR_BIN:-}
if [[ -z "$bin" ]]; then
  log "cargo build --release -p tractor"
  cargo build --locked --release -q -p tractor
  bin="$CARGO_TARGET_DIR/release/tractor"
fi
# A copy: a concurrent build replacing target/release/tractor must not change the server mid-run.
cp -fp "$bin" "$out/bin/tractor.new"
mv -f "$out/bin/tractor.new" "$out/bin/tractor"
bin="$out/bin/tractor"

log "load generators"
scripts/bench-tools.sh >"$out/tools.txt"
wrk=$(sed -n 's/^wrk=//p' "$out/tools.txt")
vegeta=$(sed -n 's/^vegeta=//p' "$out/tools.txt")

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The two sinks, on the load generator's CPUs so they never take the server's.
cat >"$out/sink.py" <<'EOF'
"""A payload log sink: `fast PORT` answers every POST 200 (HTTP/1.1 keep-alive) and counts the bytes; `hang PORT`
accepts connections, reads what comes and never answers."""
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode, port = sys.argv[1], int(sys.argv[2])
if mode == "fast":
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
else:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)

    def drain(conn):
        while conn.recv(65536):
            pass

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
EOF
fast_port=$(free_port)
hang_port=$(free_port)
taskset -c "$loadgen_cpus" python3 "$out/sink.py" fast "$fast_port" 2>"$out/sink-fast.log" &
pids+=($!)
taskset -c "$loadgen_cpus" python3 "$out/sink.py" hang "$hang_port" 2>"$out/sink-hang.log" &
pids+=($!)

# One request body: the first row of the model's test split.
stem=${model%.onnx}
python3 - "tests/fixtures/${stem}_test.json" "$out/body.json" <<'EOF'
import json, sys
split = json.load(open(sys.argv[1]))
n = split["features"]
body = {"inputs": [{"name": split["input"], "shape": [1, n], "datatype": "FP32", "data": split["x"][:n]}]}
json.dump(body, open(sys.argv[2], "w"))
EOF
cat >"$out/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$out/body.json", "r")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  io.stderr:write(string.format('{"requests": %d, "errors": %d, "seconds": %f, "p50_us": %f, "p99_us": %f}\n',
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
EOF

# serve MODE: start the server for MODE (off|fast|hang) on the server's CPUs and wait for readiness.
serve() {
  local mode=$1 flags=()
  case "$mode" in
    fast) flags=(--log-url "http://127.0.0.1:$fast_port/events") ;;
    hang) flags=(--log-url "http://127.0.0.1:$hang_port/events") ;;
  esac
  http_port=$(free_port)
  grpc_port=$(free_port)
  RUST_LOG=warn taskset -c "$server_cpus" "$bin" serve --model "tests/fixtures/$model" --name bench \
    --threads 1 --http-addr "127.0.0.1:$http_port" --grpc-addr "127.0.0.1:$grpc_port" "${flags[@]}" \
    2>>"$out/serve-$mode.log" &
  server_pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "$0: the $mode server exited; see $out/serve-$mode.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$0: the $mode server is not ready after 60 s" >&2
  exit 1
}

url() { echo "http://127.0.0.1:$http_port/v2/models/bench/infer"; }

# measure MODE ROUND: closed loop, then fixed rate, then the payload log counters; one JSON line to results.jsonl.
measure() {
  local mode=$1 round=$2
  serve "$mode"
  # Warm-up, and for the logging modes the sink's connection.
  taskset -c "$loadgen_cpus" "$wrk" -t1 -c"$connections" -d2s -s "$out/post.lua" "$(url)" >/dev/null 2>&1
  local closed
  closed=$(taskset -c "$loadgen_cpus" "$wrk" -t1 -c"$connections" -d"${secs}s" -s "$out/post.lua" "$(url)" 2>&1 >/dev/null | tail -1)
  printf 'POST %s\nContent-Type: application/json\n@%s\n' "$(url)" "$PWD/$out/body.json" >"$out/targets.txt"
  local fixed
  fixed=$(taskset -c "$loadgen_cpus" "$vegeta" attack -targets="$out/targets.txt" -rate="$rate" -duration="${secs}s" \
    | taskset -c "$loadgen_cpus" "$vegeta" report -type=json)
  local metrics
  metrics=$(curl -sf "http://127.0.0.1:$http_port/metrics" | grep '^tractor_payload_log_records_total' || true)
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  python3 - "$mode" "$round" "$closed" "$fixed" "$metrics" >>"$out/results.jsonl" <<'EOF'
import json, re, sys
mode, round_, closed, fixed, metrics = sys.argv[1:6]
closed = json.loads(closed)
fixed = json.loads(fixed)
counts = {m.group(1): float(m.group(2)) for m in re.finditer(r'outcome="(\w+)"\} (\S+)', metrics)}
print(json.dumps({
    "mode": mode, "round": int(round_),
    "closed_rps": closed["requests"] / closed["seconds"], "closed_errors": closed["errors"],
    "closed_p50_ms": closed["p50_us"] / 1e3, "closed_p99_ms": closed["p99_us"] / 1e3,
    "fixed_rps": fixed["throughput"], "fixed_success": fixed["success"],
    "fixed_p50_ms": fixed["latencies"]["50th"] / 1e6, "fixed_p99_ms": fixed["latencies"]["99th"] / 1e6,
    "log": counts,
}))
EOF
  log "$mode round $round: $(tail -1 "$out/results.jsonl")"
}

rm -f "$out/results.jsonl" "$out"/serve-*.log
load=$(cut -d' ' -f1 /proc/loadavg)
for round in $(seq "$rounds"); do
  for mode in off fast hang; do
    measure "$mode" "$round"
  done
done

python3 - "$out/results.jsonl" docs/bench/PAYLOAD-LOG.md "$model" "$secs" "$rate" "$connections" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$load" \
  "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)" <<'EOF'
import json, statistics, sys, datetime
path, report, model, secs, rate, connections, commit, load, cpu = sys.argv[1:10]
rows = [json.loads(line) for line in open(path)]
modes = {"off": "logging off", "fast": "logging to a fast local sink", "hang": "logging to a sink that never answers"}

def median_round(mode, key):
    """The round whose `key` is the median of the mode's rounds (so one row's figures come from one round)."""
    runs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r[key])
    return runs[(len(runs) - 1) // 2]

closed = {m: median_round(m, "closed_rps") for m in modes}
fixed = {m: median_round(m, "fixed_p99_ms") for m in modes}
ratio = lambda a, b: f"{a / b:.2f}×" if b else "–"
lines = [
    "# Payload logging: what it costs the server",
    "",
    f"Generated by `make bench-payload-log` (`scripts/bench-payload-log.sh`) on {datetime.date.today()}, tractor at "
    f"`{commit}`, on {cpu or 'this machine'}, load average {load} at the start ({len(set(r['round'] for r in rows))} "
    "rounds, the median round shown). "
    f"The release server runs `{model}` pinned to one CPU with `--threads 1`; wrk, vegeta and both sinks share the "
    "other CPU. Every call is logged (`--log-sample-rate 1`, inputs included): the worst case. Ratios are against "
    "\"off\" in the same run; single figures move ±20 % between runs on a shared 2-core machine, so read the ratios.",
    "",
    f"## Closed loop (wrk, {connections} connections, {secs} s)",
    "",
    "| mode | throughput (req/s) | p50 (ms) | p99 (ms) | throughput vs off | p50 vs off | p99 vs off |",
    "|---|---:|---:|---:|---:|---:|---:|",
]
for m, name in modes.items():
    r, o = closed[m], closed["off"]
    lines.append(f"| {name} | {r['closed_rps']:.0f} | {r['closed_p50_ms']:.3f} | {r['closed_p99_ms']:.3f} | "
                 f"{ratio(r['closed_rps'], o['closed_rps'])} | {ratio(r['closed_p50_ms'], o['closed_p50_ms'])} | "
                 f"{ratio(r['closed_p99_ms'], o['closed_p99_ms'])} |")
lines += [
    "",
    f"## Fixed rate (vegeta, {rate} req/s, {secs} s)",
    "",
    "| mode | achieved (req/s) | success | p50 (ms) | p99 (ms) | p50 vs off | p99 vs off |",
    "|---|---:|---:|---:|---:|---:|---:|",
]
for m, name in modes.items():
    r, o = fixed[m], fixed["off"]
    lines.append(f"| {name} | {r['fixed_rps']:.0f} | {r['fixed_success'] * 100:.1f} % | {r['fixed_p50_ms']:.3f} | "
                 f"{r['fixed_p99_ms']:.3f} | {ratio(r['fixed_p50_ms'], o['fixed_p50_ms'])} | "
                 f"{ratio(r['fixed_p99_ms'], o['fixed_p99_ms'])} |")
lines += [
    "",
    "## Where the records went",
    "",
    "`tractor_payload_log_records_total` at the end of each mode's median closed-loop round (warm-up, closed loop "
    "and fixed rate together; two records per call):",
    "",
    "| mode | sent | queue_full | sink_error |",
    "|---|---:|---:|---:|",
]
for m, name in modes.items():
    if m == "off":
        continue
    c = closed[m]["log"]
    lines.append(f"| {name} | {c.get('sent', 0):.0f} | {c.get('queue_full', 0):.0f} | {c.get('sink_error', 0):.0f} |")
lines += [
    "",
    "With a sink that never answers, the one background sender holds one batch (64 records) for the 2 s POST "
    "timeout, the queue (1024 calls) fills, and every later call is dropped at `try_send` and counted as "
    "`queue_full`: the request path never waits. With the fast sink, copying, serializing and sending every record "
    "runs on the server's own CPU: that is what the closed-loop throughput ratio and the fixed-rate tail show "
    "(sample to pay less). p99 is the noisiest figure here; compare it across the rounds below.",
    "",
    "## All rounds",
    "",
    "| mode | round | closed req/s | closed p50 | closed p99 | fixed p50 | fixed p99 | sent | queue_full | sink_error |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for r in rows:
    c = r["log"]
    lines.append(f"| {r['mode']} | {r['round']} | {r['closed_rps']:.0f} | {r['closed_p50_ms']:.3f} | "
                 f"{r['closed_p99_ms']:.3f} | {r['fixed_p50_ms']:.3f} | {r['fixed_p99_ms']:.3f} | "
                 f"{c.get('sent', 0):.0f} | {c.get('queue_full', 0):.0f} | {c.get('sink_error', 0):.0f} |")
open(report, "w").write("\n".join(lines) + "\n")
EOF
log "report: docs/bench/PAYLOAD-LOG.md"
