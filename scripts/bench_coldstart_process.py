#!/usr/bin/env python3
"""make bench-coldstart, process part: server process start -> ready, and resident memory right after, for
`tractor serve` and for KServe's Python ModelServer (scripts/kserve_onnx_server.py, onnxruntime) on the same
models in the same run: a small one (tests/fixtures/digits_mlp.onnx) and a large one (an f32 MLP of ~27 M
parameters, generated into --out). tractor serves what a pod serves: the artifact `tractor optimize` makes, checked
against its digest; KServe serves the ONNX source. Also collects tractor's own start breakdown
(`tractor_model_load_seconds{phase}`) and KServe's (interpreter + imports, model load, server start).

Run with the bench venv's python (scripts/bench-requirements.txt):
    python scripts/bench_coldstart_process.py --tractor target/release/tractor --out DIR [--runs 5] [--json F]
Prints a markdown report and writes DIR/process.md; never gates on a time: the goals are reported, not asserted.
"""
import argparse
import hashlib
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
SMALL_MODEL = REPO / "tests/fixtures/digits_mlp.onnx"
KSERVE_SERVER = REPO / "scripts/kserve_onnx_server.py"
MODEL_NAME = "m"
# Layer widths of the large model: 1024*4096 + 4096*4096 + 4096*1536 + 1536*16 weights, ~27.3 M parameters,
# 109 MB of f32, so that reading and preparing the weights, not the server's own start, dominates.
LARGE_WIDTHS = [1024, 4096, 4096, 1536, 16]
LARGE_SEED = 20261205
POLL_SECONDS = 0.002
READY_PATH = "/v2/health/ready"
MODEL_READY_PATH = f"/v2/models/{MODEL_NAME}/ready"
PHASES = ["load", "optimize", "warm_up", "total"]
MIB = 1024 * 1024
# Goals of the issue "cold start measured", reported with a mark each, never asserted.
GOAL_SMALL_READY_MS = 100.0
GOAL_SPEEDUP = 10.0
GOAL_RSS_OVER_FILE_MIB = 64.0
# Set by the test environment, not by a pod; tractor re-executes itself without them, which a pod never pays.
STRIPPED_ENV = ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")


@dataclass
class ModelCase:
    """One model and the file each server is given."""

    name: str
    source: Path
    source_bytes: int
    source_sha256: str
    artifact: Path
    artifact_bytes: int
    artifact_sha256: str
    precision: str
    inputs: List[dict]
    optimize_seconds: float


@dataclass
class RunResult:
    """One server start: spawn -> first ready answer, then what it holds and says."""

    server: str
    model: str
    run: int
    ready_ms: float
    rss_bytes: int
    processes: int
    model_ready_too: bool
    infer_ms: float
    phases_ms: Dict[str, float] = field(default_factory=dict)
    outputs: Dict[str, List[float]] = field(default_factory=dict)


class BenchError(RuntimeError):
    pass


class PortPool:
    """Free loopback ports, never the same one twice in a run, so a server still closing cannot answer for
    the next one."""

    def __init__(self) -> None:
        self.given: set = set()

    def take(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in self.given:
                self.given.add(port)
                return port
        raise BenchError("no fresh free port after 100 tries")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_large_model(out: Path) -> Path:
    """The large model, generated once into `out` (it is 109 MB: not committed). Seeded, so every machine
    benches the same weights; its sha256 sits next to it."""
    path = out / "large_mlp.onnx"
    stamp = out / "large_mlp.onnx.sha256"
    if path.is_file() and stamp.is_file() and stamp.read_text().split()[0] == sha256_of(path):
        return path
    rng = np.random.default_rng(LARGE_SEED)
    nodes, initializers = [], []
    previous = "X"
    layers = list(zip(LARGE_WIDTHS, LARGE_WIDTHS[1:]))
    for i, (fan_in, fan_out) in enumerate(layers):
        # Scaled like a trained layer's (He-style), so activations stay finite through the stack.
        weight = (rng.standard_normal((fan_in, fan_out), dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out, dtype=np.float32) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"h{i}"]))
        previous = f"h{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [previous], [f"r{i}"]))
            previous = f"r{i}"
    nodes.append(helper.make_node("Softmax", [previous], ["Y"], axis=1))
    graph = helper.make_graph(
        nodes,
        "large_mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", LARGE_WIDTHS[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", LARGE_WIDTHS[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench-coldstart")
    onnx.checker.check_model(model)
    partial = path.with_suffix(".onnx.partial")
    onnx.save(model, str(partial))
    partial.rename(path)
    stamp.write_text(f"{sha256_of(path)}  {path.name}\n")
    return path


def optimize(tractor: Path, name: str, source: Path, out: Path, precision: str, logs: Path) -> ModelCase:
    """`tractor optimize`, as the optimize Job runs it; the case serves the artifact it reports."""
    artifact_dir = out / f"{name}-artifact"
    report_path = out / f"{name}-report.json"
    log = logs / f"optimize-{name}.log"
    command = [str(tractor), "optimize", "--source", str(source), "--out", str(artifact_dir),
               "--report", str(report_path), "--precision", precision]
    started = time.perf_counter()
    with log.open("wb") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=server_env(), timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not report_path.is_file():
        raise BenchError(f"tractor optimize of the {name} model failed ({done.returncode}); last lines of "
                         f"{log}:\n{tail(log)}")
    report = json.loads(report_path.read_text())
    if report.get("reason"):
        raise BenchError(f"tractor optimize of the {name} model refused: {report.get('reason')}: "
                         f"{report.get('message')}")
    # The report names the artifact by digest; the file is `<out>/model.nnef.tgz` (names.rs ARTIFACT_FILE).
    artifact = artifact_dir / "model.nnef.tgz"
    digest = sha256_of(artifact)
    if f"sha256:{digest}" != report["artifactDigest"]:
        raise BenchError(f"{artifact} has sha256 {digest}, the report says {report['artifactDigest']}")
    return ModelCase(
        name=name,
        source=source,
        source_bytes=source.stat().st_size,
        source_sha256=sha256_of(source),
        artifact=artifact,
        artifact_bytes=artifact.stat().st_size,
        artifact_sha256=digest,
        precision=report.get("precision", "?"),
        inputs=report["inputs"],
        optimize_seconds=seconds,
    )


# What the operator sets in every serving container (MALLOC_MMAP_THRESHOLD in
# crates/tractor-operator/src/children.rs): tractor's process is measured as it runs in a pod.
TRACTOR_POD_ENV = {"MALLOC_MMAP_THRESHOLD_": "4194304"}


def server_env(server: str = "") -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in STRIPPED_ENV}
    if server == "tractor":
        env.update(TRACTOR_POD_ENV)
    return env


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(cannot read {path}: {error})"
    # tractor's plain log format colours fields; the escapes only make the error harder to read.
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return "\n".join(text.splitlines()[-lines:])


def http_request(port: int, method: str, path: str, body: Optional[bytes] = None,
                 timeout: float = 10.0) -> Tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def process_tree(root: int) -> List[int]:
    """`root` and every descendant, from /proc's parent links (a forking server's workers count too)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after its last ')' do not.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def rss_of_tree(root: int) -> Tuple[int, int]:
    """Summed VmRSS of the tree, bytes, and how many processes it has. Pages shared between processes count
    once per process, as `ps` would add them."""
    total, count = 0, 0
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
        if match:
            total += int(match.group(1)) * 1024
            count += 1
    return total, count


def infer_body(inputs: List[dict]) -> bytes:
    """One row per input, a fixed ramp in [0, 1): the same request to both servers, so their answers compare."""
    tensors = []
    for spec in inputs:
        if spec["datatype"] != "FP32":
            raise BenchError(f"input {spec['name']}: only FP32 inputs are benched, not {spec['datatype']}")
        shape = [1 if dim < 0 else dim for dim in spec["shape"]]
        count = int(np.prod(shape))
        data = [round((i % 97) / 97.0, 6) for i in range(count)]
        tensors.append({"name": spec["name"], "datatype": "FP32", "shape": shape, "data": data})
    return json.dumps({"inputs": tensors}).encode()


def load_phases_ms(metrics_text: str) -> Dict[str, float]:
    phases = {}
    for line in metrics_text.splitlines():
        match = re.match(r'^tractor_model_load_seconds\{([^}]*)\}\s+(\S+)', line)
        if match:
            label = re.search(r'phase="([^"]*)"', match.group(1))
            if label:
                phases[label.group(1)] = float(match.group(2)) * 1e3
    return phases


def kserve_phases_ms(log: Path, spawned: float, ready: float) -> Dict[str, float]:
    """KServe's start split by the marks scripts/kserve_onnx_server.py logs (same monotonic clock as ours)."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("BENCH-MARKS "):
            marks = json.loads(line[len("BENCH-MARKS "):])
            return {
                "interpreter": (marks["started"] - spawned) * 1e3,
                "imports": (marks["imported"] - marks["started"]) * 1e3,
                "load": (marks["loaded"] - marks["imported"]) * 1e3,
                "server_start": (ready - marks["loaded"]) * 1e3,
            }
    return {}


def stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    # Its own session, so a worker it forked goes too.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=grace)


def measure(server: str, case: ModelCase, run: int, command: List[str], http_port: int, log: Path,
            timeout: float) -> RunResult:
    label = f"{server} on the {case.name} model (run {run + 1})"
    with log.open("wb") as sink:
        spawned = time.perf_counter()
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=server_env(server), start_new_session=True, cwd=REPO)
    try:
        deadline = spawned + timeout
        while True:
            if process.poll() is not None:
                raise BenchError(f"{label} exited with {process.returncode} before ready; last lines of "
                                 f"{log}:\n{tail(log)}")
            try:
                status, _ = http_request(http_port, "GET", READY_PATH, timeout=max(0.1, deadline - time.perf_counter()))
                if status == 200:
                    ready = time.perf_counter()
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.perf_counter() > deadline:
                raise BenchError(f"{label}: {READY_PATH} not 200 after {timeout:.0f} s; last lines of "
                                 f"{log}:\n{tail(log)}")
            time.sleep(POLL_SECONDS)
        rss, processes = rss_of_tree(process.pid)
        # Ready must mean the model is loaded: both servers load before they listen, and this says so.
        model_status, _ = http_request(http_port, "GET", MODEL_READY_PATH)
        infer_started = time.perf_counter()
        status, body = http_request(http_port, "POST", f"/v2/models/{MODEL_NAME}/infer", infer_body(case.inputs),
                                    timeout=timeout)
        infer_ms = (time.perf_counter() - infer_started) * 1e3
        if status != 200:
            raise BenchError(f"{label}: inference answered {status}: {body[:500]!r}; last lines of {log}:\n"
                             f"{tail(log)}")
        answer = json.loads(body)
        outputs = {tensor["name"]: [float(value) for value in tensor["data"]] for tensor in answer["outputs"]}
        if not outputs:
            raise BenchError(f"{label}: inference answered no outputs: {body[:500]!r}")
        if server == "tractor":
            _, metrics_body = http_request(http_port, "GET", "/metrics")
            phases = load_phases_ms(metrics_body.decode(errors="replace"))
        else:
            phases = kserve_phases_ms(log, spawned, ready)
        return RunResult(server=server, model=case.name, run=run, ready_ms=(ready - spawned) * 1e3, rss_bytes=rss,
                         processes=processes, model_ready_too=model_status == 200, infer_ms=infer_ms,
                         phases_ms=phases, outputs=outputs)
    finally:
        stop(process)


def tractor_command(tractor: Path, case: ModelCase, http_port: int, grpc_port: int) -> List[str]:
    # As the operator's Deployment runs it (children.rs): the artifact, checked against its digest.
    return [str(tractor), "serve", "--model", str(case.artifact), "--name", MODEL_NAME,
            "--sha256", case.artifact_sha256,
            "--http-addr", f"127.0.0.1:{http_port}", "--grpc-addr", f"127.0.0.1:{grpc_port}"]


def kserve_command(case: ModelCase, http_port: int, grpc_port: int) -> List[str]:
    return [sys.executable, str(KSERVE_SERVER), "--model_path", str(case.source), "--model_name", MODEL_NAME,
            "--http_port", str(http_port), "--grpc_port", str(grpc_port)]


def machine() -> Dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = "unknown"
    match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    if match:
        memory = f"{int(match.group(1)) / MIB:.1f} GiB"
    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu": cpu, "memory": memory,
            "kernel": platform.release()}


def versions(tractor: Path) -> Dict[str, str]:
    def output(command: List[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"

    rev = output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    # Other work in the tree may be built into the binary; say so rather than claim the commit.
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "crates", "Cargo.lock"], cwd=REPO).returncode
    return {
        "tractor": output([str(tractor), "--version"]),
        "tractor_rev": rev + ("+dirty" if dirty else ""),
        "kserve": metadata.version("kserve"),
        "onnxruntime": metadata.version("onnxruntime"),
        "python": platform.python_version(),
    }


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(cases: List[ModelCase], results: List[RunResult]) -> List[dict]:
    rows = []
    for case in cases:
        medians = {}
        for server in ("tractor", "kserve"):
            mine = [result for result in results if result.server == server and result.model == case.name]
            ready = [result.ready_ms for result in mine]
            served = case.artifact if server == "tractor" else case.source
            served_bytes = case.artifact_bytes if server == "tractor" else case.source_bytes
            rss_mib = median([result.rss_bytes / MIB for result in mine])
            medians[server] = median(ready)
            rows.append({
                "server": server,
                "model": case.name,
                "served": served.name if server == "kserve" else f"{served.parent.name}/{served.name}",
                "precision": case.precision if server == "tractor" else "f32",
                "runs": len(mine),
                "ready_ms_median": median(ready),
                "ready_ms_min": min(ready),
                "ready_ms_max": max(ready),
                "rss_mib_median": rss_mib,
                "processes": max(result.processes for result in mine),
                "file_mib": served_bytes / MIB,
                "rss_over_file_mib": rss_mib - served_bytes / MIB,
                "model_ready_at_ready": all(result.model_ready_too for result in mine),
                "infer_ms_median": median([result.infer_ms for result in mine]),
                "phases_ms_median": {
                    phase: median([result.phases_ms[phase] for result in mine if phase in result.phases_ms])
                    for phase in sorted({phase for result in mine for phase in result.phases_ms})
                },
            })
        ratio = medians["kserve"] / medians["tractor"]
        for row in rows[-2:]:
            row["kserve_over_tractor"] = ratio
    return rows


def agreement(cases: List[ModelCase], results: List[RunResult]) -> Dict[str, float]:
    """Largest |difference| between the two servers' answers to the same request (first run of each)."""
    worst = {}
    for case in cases:
        first = {result.server: result for result in results if result.model == case.name and result.run == 0}
        diffs = [abs(left - right)
                 for name, values in first["tractor"].outputs.items()
                 for left, right in zip(values, first["kserve"].outputs.get(name, []))]
        worst[case.name] = max(diffs) if diffs else float("nan")
    return worst


def goals(rows: List[dict]) -> List[dict]:
    by = {(row["server"], row["model"]): row for row in rows}
    checks = []
    small = by[("tractor", "small")]["ready_ms_median"]
    checks.append({"goal": f"small model process ready ≤ {GOAL_SMALL_READY_MS:.0f} ms (tractor, median)",
                   "value": f"{small:.1f} ms", "met": small <= GOAL_SMALL_READY_MS})
    for model in ("small", "large"):
        ratio = by[("tractor", model)]["kserve_over_tractor"]
        checks.append({"goal": f"≥ {GOAL_SPEEDUP:.0f}× faster process start than KServe, {model} model",
                       "value": f"{ratio:.1f}×", "met": ratio >= GOAL_SPEEDUP})
    for model in ("small", "large"):
        row = by[("tractor", model)]
        checks.append({"goal": f"tractor RSS after ready ≤ artifact + {GOAL_RSS_OVER_FILE_MIB:.0f} MiB, {model} model",
                       "value": f"{row['rss_mib_median']:.1f} MiB = artifact {row['file_mib']:.2f} "
                                f"{row['rss_over_file_mib']:+.1f} MiB",
                       "met": row["rss_over_file_mib"] <= GOAL_RSS_OVER_FILE_MIB})
    return checks


def markdown(info: dict, cases: List[ModelCase], rows: List[dict], checks: List[dict],
             agree: Dict[str, float], wall: float) -> str:
    host, vers = info["machine"], info["versions"]
    lines = [
        "# Cold start: server process start -> ready",
        "",
        f"Machine: {host['nproc']} CPUs ({host['cpu']}), {host['memory']}, Linux {host['kernel']}. "
        f"tractor {vers['tractor_rev']} ({vers['tractor']}); KServe {vers['kserve']} with onnxruntime "
        f"{vers['onnxruntime']}, Python {vers['python']}. {info['runs']} starts per server and model, "
        f"alternating which server goes first; bench wall time {wall:.1f} s.",
        "",
        f"Ready: time from just before spawning the process to the first 200 from `GET {READY_PATH}`, polled every "
        f"{POLL_SECONDS * 1e3:.0f} ms, for both servers (each loads its model before it listens; "
        f"`GET {MODEL_READY_PATH}` was 200 right after in every run: "
        f"{'yes' if all(row['model_ready_at_ready'] for row in rows) else 'NO'}). "
        "RSS: VmRSS summed over the server process and its descendants, read right after ready. "
        f"tractor serves the artifact `tractor optimize --precision {info['precision']}` made, with `--sha256` "
        "and the environment a pod gives it (`MALLOC_MMAP_THRESHOLD_`); KServe serves the ONNX source with "
        "onnxruntime. Files are in the page cache (no cold disk).",
        "",
        "| server | model | served file | precision | ready ms (median) | min | max | RSS MiB (median) | "
        "processes | file MiB | RSS − file MiB | KServe / tractor |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['server']} | {row['model']} | `{row['served']}` | {row['precision']} | "
            f"{row['ready_ms_median']:.1f} | {row['ready_ms_min']:.1f} | {row['ready_ms_max']:.1f} | "
            f"{row['rss_mib_median']:.1f} | {row['processes']} | {row['file_mib']:.2f} | "
            f"{row['rss_over_file_mib']:+.1f} | {row['kserve_over_tractor']:.1f}× |")
    lines += ["", "Where tractor's start goes: `tractor_model_load_seconds{phase}` from its `/metrics`, median ms; "
              "`outside` = ready − total: exec, runtime and socket setup, and the poll's granularity.", "",
              "| model | " + " | ".join(PHASES) + " | outside |", "|---|" + "---:|" * (len(PHASES) + 1)]
    for row in rows:
        if row["server"] != "tractor":
            continue
        phases = row["phases_ms_median"]
        cells = [f"{phases[phase]:.1f}" if phase in phases else "n/a" for phase in PHASES]
        outside = f"{row['ready_ms_median'] - phases['total']:.1f}" if "total" in phases else "n/a"
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {outside} |")
    kserve_phases = ["interpreter", "imports", "load", "server_start"]
    lines += ["", "Where KServe's start goes (marks logged by scripts/kserve_onnx_server.py, median ms): interpreter "
              "start, `import kserve, onnxruntime`, `InferenceSession` in `load()`, then `ModelServer.start` to the "
              "first ready answer.", "",
              "| model | " + " | ".join(kserve_phases) + " |", "|---|" + "---:|" * len(kserve_phases)]
    for row in rows:
        if row["server"] != "kserve":
            continue
        phases = row["phases_ms_median"]
        lines.append(f"| {row['model']} | "
                     + " | ".join(f"{phases[phase]:.1f}" if phase in phases else "n/a" for phase in kserve_phases)
                     + " |")
    lines += ["", "Models: " + "; ".join(
        f"{case.name}: `{case.source.name}` ({case.source_bytes / MIB:.2f} MiB, sha256 {case.source_sha256[:12]}…)"
        f" -> artifact {case.precision}, {case.artifact_bytes / MIB:.2f} MiB (optimize took "
        f"{case.optimize_seconds:.1f} s)" for case in cases) + ".",
        "Both servers answer the same one-row request; largest |difference| of their outputs: "
        + ", ".join(f"{name} {value:.2g}" for name, value in agree.items())
        + " (tractor may serve a reduced precision).", "",
        "Goals (reported, not asserted):", ""]
    for check in checks:
        lines.append(f"- {'✓' if check['met'] else '✗'} {check['goal']}: {check['value']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tractor", type=Path, required=True, help="the release `tractor` binary")
    parser.add_argument("--out", type=Path, required=True, help="folder for models, artifacts, logs and process.md")
    parser.add_argument("--runs", type=int, default=5, help="starts per server and model")
    parser.add_argument("--json", type=Path, help="also write machine-readable results here")
    parser.add_argument("--precision", default="auto", help="`tractor optimize --precision` (default as a pod)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one server may take to be ready")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    tractor = args.tractor.resolve()
    if not os.access(tractor, os.X_OK):
        parser.error(f"--tractor {tractor}: not an executable")
    started = time.perf_counter()
    out = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    sources = {"small": SMALL_MODEL, "large": ensure_large_model(out)}
    cases = []
    for name, source in sources.items():
        print(f"[bench-coldstart] tractor optimize {source.name}", file=sys.stderr, flush=True)
        cases.append(optimize(tractor, name, source, out, args.precision, logs))

    ports = PortPool()
    results: List[RunResult] = []
    for run in range(args.runs):
        for case in cases:
            # Alternating the order keeps either server from always starting right after the other stopped.
            order = ("tractor", "kserve") if run % 2 == 0 else ("kserve", "tractor")
            for server in order:
                http_port, grpc_port = ports.take(), ports.take()
                if server == "tractor":
                    command = tractor_command(tractor, case, http_port, grpc_port)
                else:
                    command = kserve_command(case, http_port, grpc_port)
                log = logs / f"{server}-{case.name}-{run + 1}.log"
                result = measure(server, case, run, command, http_port, log, args.timeout)
                results.append(result)
                print(f"[bench-coldstart] run {run + 1}/{args.runs} {server:7} {case.name:5} ready "
                      f"{result.ready_ms:8.1f} ms  RSS {result.rss_bytes / MIB:7.1f} MiB", file=sys.stderr,
                      flush=True)

    wall = time.perf_counter() - started
    info = {"machine": machine(), "versions": versions(tractor), "runs": args.runs, "precision": args.precision}
    rows = summarize(cases, results)
    checks = goals(rows)
    agree = agreement(cases, results)
    report = markdown(info, cases, rows, checks, agree, wall)
    (out / "process.md").write_text(report)
    print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        for result in results:
            # The answers only served the agreement check; keep the JSON small.
            result.outputs = {}
        payload = {
            **info,
            "wall_seconds": wall,
            "ready_endpoint": READY_PATH,
            "poll_seconds": POLL_SECONDS,
            "models": [{**asdict(case), "source": str(case.source), "artifact": str(case.artifact)}
                       for case in cases],
            "summary": rows,
            "agreement_max_abs_diff": agree,
            "goals": checks,
            "runs_detail": [asdict(result) for result in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        print(f"[bench-coldstart] {error}", file=sys.stderr)
        sys.exit(1)
