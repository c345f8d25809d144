#!/usr/bin/env python3
"""make bench: tractor against the servers users would pick instead (KServe, MLServer, BentoML, Ray Serve), on the
same ONNX models, the same CPU budget and the same load, in one run; writes docs/bench/REPORT.md and its plots.

For each model (scripts/bench_peers_models.py) and each server (scripts/bench_peers_servers.py), one after the other:
1. start the server pinned to the server core(s) (`taskset`), time process start -> first 200 to a real inference
   request (once in the quick run, three times in the full one; the last start stays up);
2. check its answers to a few real rows against onnxruntime's (relative 1e-4): a server that disagrees has its cells
   of that model marked invalid and left out of the ratios;
3. warm it up (wrk at c=8), read its memory (RSS and PSS summed over its process tree);
4. closed loop: wrk at concurrency 1, 8, 32, REST JSON batch 1 (tractor's binary extension as an extra row), and
   ghz over gRPC where the server speaks the V2 gRPC protocol;
5. open loop: vegeta at fixed rates, searching for the highest rate whose p99 stays <= 50 ms with no error.
The load generators and this driver run on the other core(s). Results go to OUT/results.json; the report and plots
are drawn from it by scripts/bench_peers_report.py (rerun that alone to redraw). Goals are reported, not asserted.

    python scripts/bench_peers.py --tractor BIN --venvs DIR --tools FILE --out DIR [--quick]
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnxruntime

import bench_peers_load as load
import bench_peers_report as report
from bench_coldstart_process import machine, process_tree, rss_of_tree, tail
from bench_peers_models import GENERATORS, BenchModel, ensure_models
from bench_peers_servers import (CONFIGURATION, GRPC_PROTO, JSON_HEADERS, SERVERS, BINARY_HEADER, Installed, Launch,
                                 Ports, ServerSpec, grpc_json_body, package_versions, parse_answer,
                                 parse_binary_answer, request_body, v2_binary_body)

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
CONCURRENCIES = [1, 8, 32]
P99_LIMIT_MS = 50.0
# Relative agreement with onnxruntime, as the issue asks; the absolute floor only forgives values so close to 0
# (softmax tails of 1e-12) that relative error means nothing.
RTOL = 1e-4
ATOL = 1e-6
POLL_SECONDS = 0.002
START_TIMEOUT_SECONDS = 180.0
STOP_GRACE_SECONDS = 20.0
PRIORITY_NICENESS = -10
# vegeta CPU seconds per second of attack from which a probe says more about vegeta than about the server.
LOADGEN_BUSY_LIMIT = 0.85


@dataclass
class Settings:
    """How long and how often; the quick run is the same bench with shorter cells."""

    quick: bool
    cell_seconds: float
    warmup_seconds: float
    probe_seconds: float
    probes: int
    starts: int
    server_cpus: str
    loadgen_cpus: str

    @classmethod
    def make(cls, quick: bool, server_cpus: str, loadgen_cpus: str) -> "Settings":
        if quick:
            return cls(quick, 2.0, 1.0, 2.0, 4, 1, server_cpus, loadgen_cpus)
        return cls(quick, 10.0, 3.0, 8.0, 7, 3, server_cpus, loadgen_cpus)


@dataclass
class Tools:
    wrk: Path
    vegeta: Path
    ghz: Path


@dataclass
class PairResult:
    """One server on one model: everything the report needs, JSON-ready."""

    server: str
    model: str
    start_ms: List[float] = field(default_factory=list)
    valid: Optional[bool] = None
    check: Dict[str, object] = field(default_factory=dict)
    memory: Dict[str, float] = field(default_factory=dict)
    rest: List[dict] = field(default_factory=list)
    binary: List[dict] = field(default_factory=list)
    grpc: List[dict] = field(default_factory=list)
    sustained: Dict[str, object] = field(default_factory=dict)
    tractor_metrics: Dict[str, float] = field(default_factory=dict)
    error: str = ""


class BenchError(RuntimeError):
    pass


class PortPool:
    """Loopback ports below the kernel's ephemeral range, handed out in order and never twice in a run: after a
    load run, binding port 0 keeps returning a few ports (the ephemeral range is full of TIME-WAIT), and a server
    still closing must not answer for the next one."""

    FIRST, LAST = 20000, 32000

    def __init__(self) -> None:
        self.next = self.FIRST + (os.getpid() % 1000) * 10

    def take(self) -> int:
        while self.next < self.LAST:
            port = self.next
            self.next += 1
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise BenchError("no free loopback port left below 32000")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def post(port: int, path: str, body: bytes, headers: Dict[str, str],
         timeout: float = 30.0) -> Tuple[int, Dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {key.lower(): value for key, value in response.getheaders()}, response.read()
    finally:
        connection.close()


def pss_of_tree(root: int) -> int:
    """Summed proportional set size of the tree, bytes: shared pages split between the processes sharing them,
    so a multi-process server is not charged twice for its libraries."""
    total = 0
    for pid in process_tree(root):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


def memory_of(process: subprocess.Popen) -> Dict[str, float]:
    rss, processes = rss_of_tree(process.pid)
    return {"rss_mib": rss / MIB, "pss_mib": pss_of_tree(process.pid) / MIB, "processes": processes}


class RunningServer:
    """A server process pinned to the server core(s), its log, and how to stop all of it."""

    def __init__(self, spec: ServerSpec, launch: Launch, settings: Settings, log_path: Path) -> None:
        self.spec = spec
        self.launch = launch
        self.log_path = log_path
        with log_path.open("ab") as sink:
            self.spawned = time.perf_counter()
            self.process = subprocess.Popen(["taskset", "-c", settings.server_cpus, *launch.argv], cwd=launch.cwd,
                                            env=launch.env, stdout=sink, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, port: int, path: str, body: bytes, headers: Dict[str, str]) -> float:
        """Milliseconds from spawn to the first 200 answer to a real inference request."""
        deadline = self.spawned + START_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"{self.spec.name} exited with {self.process.returncode} before answering; "
                                 f"last lines of {self.log_path}:\n{tail(self.log_path)}")
            try:
                status, _, _ = post(port, path, body, headers, timeout=10.0)
                if status == 200:
                    return (time.perf_counter() - self.spawned) * 1e3
            except (OSError, http.client.HTTPException):
                pass
            if time.perf_counter() > deadline:
                raise BenchError(f"{self.spec.name} gave no 200 within {START_TIMEOUT_SECONDS:.0f} s; last lines of "
                                 f"{self.log_path}:\n{tail(self.log_path)}")
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for whatever of its tree (Ray's workers included) is still there."""
        tree = process_tree(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        for pid in [self.process.pid, *tree]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=STOP_GRACE_SECONDS)
        for folder in self.launch.cleanup:
            shutil.rmtree(folder, ignore_errors=True)


def reference_outputs(model: BenchModel) -> Tuple[List[str], List[Dict[str, np.ndarray]]]:
    """onnxruntime's answer to each sample row, one row per run (batch 1, as the servers are asked)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model.path), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    answers = []
    for row in model.rows:
        results = session.run(names, {model.input_name: row[np.newaxis]})
        answers.append({name: np.asarray(result, dtype=np.float64).ravel() for name, result in zip(names, results)})
    return names, answers


def compare(expected: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Tuple[bool, float, str]:
    """Whether every output agrees; the largest relative difference; what disagreed."""
    worst = 0.0
    for name, want in expected.items():
        if name not in got:
            return False, float("inf"), f"output {name} missing (got {sorted(got)})"
        have = got[name].ravel()
        if have.size != want.size:
            return False, float("inf"), f"output {name}: {have.size} values, onnxruntime {want.size}"
        difference = np.abs(have - want)
        relative = difference / np.maximum(np.abs(want), ATOL)
        worst = max(worst, float(relative.max(initial=0.0)))
        if not np.all(difference <= RTOL * np.abs(want) + ATOL):
            index = int(np.argmax(difference - RTOL * np.abs(want)))
            return False, worst, f"output {name}[{index}]: {have[index]!r} vs onnxruntime {want[index]!r}"
    return True, worst, ""


def check_answers(spec: ServerSpec, model: BenchModel, port: int, expected: List[Dict[str, np.ndarray]]) -> dict:
    worst = 0.0
    for index, row in enumerate(model.rows):
        headers = JSON_HEADERS
        status, _, body = post(port, spec.infer_path, request_body(spec, model, row), headers)
        if status != 200:
            return {"valid": False, "max_rel": None, "detail": f"row {index}: HTTP {status}: {body[:200]!r}"}
        agree, rel, detail = compare(expected[index], parse_answer(spec, body))
        worst = max(worst, rel)
        if not agree:
            return {"valid": False, "max_rel": worst, "detail": f"row {index}: {detail}"}
    return {"valid": True, "max_rel": worst, "detail": ""}


def check_binary_answers(model: BenchModel, port: int, names: List[str],
                         expected: List[Dict[str, np.ndarray]]) -> dict:
    worst = 0.0
    for index, row in enumerate(model.rows):
        body, headers = v2_binary_body(model, row, names)
        status, answer_headers, answer = post(port, SERVERS["tractor"].infer_path, body, headers)
        if status != 200:
            return {"valid": False, "max_rel": None, "detail": f"row {index}: HTTP {status}: {answer[:200]!r}"}
        length = int(answer_headers.get(BINARY_HEADER.lower(), len(answer)))
        agree, rel, detail = compare(expected[index], parse_binary_answer(answer, length))
        worst = max(worst, rel)
        if not agree:
            return {"valid": False, "max_rel": worst, "detail": f"row {index}: {detail}"}
    return {"valid": True, "max_rel": worst, "detail": ""}


def find_sustained_rate(probe, capacity: float, probes: int) -> dict:
    """The highest open-loop rate with p99 <= P99_LIMIT_MS and no error, by bisection (on a log scale) between 0 and
    1.2x the best closed-loop rate, starting at half of it. A probe where vegeta fell behind or filled its core caps
    the search (a higher ask would measure vegeta) and marks the answer as a lower bound."""
    low, high = 0.0, 1.2 * capacity
    rate = max(1.0, 0.5 * capacity)
    tried, best = [], None
    generator_bound = False
    for _ in range(probes):
        result = probe(rate)
        passed = result.requests > 0 and result.error_count == 0 and result.latency_ms["p99"] <= P99_LIMIT_MS
        # vegeta fell behind its schedule, or used its whole core: the probe measured vegeta as much as the server.
        short = result.sent_rate < 0.95 * rate or result.loadgen_busy >= LOADGEN_BUSY_LIMIT
        tried.append({**result.to_json(), "passed": passed, "generator_bound": short})
        if passed and (best is None or result.rate > best.rate):
            best = result
        if short:
            # Nothing above this rate can be measured on the load generator's core: the answer is a lower bound.
            generator_bound = True
            if passed:
                break
            high = min(high, result.sent_rate, rate)
        elif passed:
            low = rate
        else:
            high = rate
        if high <= low * 1.05:
            break
        rate = (low + high) / 2 if low else max(1.0, high / 3)
    return {
        "rate": best.rate if best else 0.0,
        "p99_ms": best.latency_ms["p99"] if best else None,
        "p50_ms": best.latency_ms["p50"] if best else None,
        "generator_bound": generator_bound,
        "probes": tried,
    }


def tractor_metrics(port: int) -> Dict[str, float]:
    """Where tractor's time went over the run: request, queue and compute seconds (sums and counts) and the
    mean batch size, from its /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode(errors="replace")
    finally:
        connection.close()
    wanted = {}
    for line in text.splitlines():
        for family in ("tractor_inference_request_duration_seconds", "tractor_inference_queue_duration_seconds",
                       "tractor_inference_compute_duration_seconds", "tractor_inference_batch_size"):
            for suffix in ("_sum", "_count"):
                if line.startswith(family + suffix):
                    wanted[family + suffix] = wanted.get(family + suffix, 0.0) + float(line.rsplit(" ", 1)[1])
    return wanted


def metrics_split(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    """Means over one cell from two /metrics snapshots: the server's whole request, its queue wait and the model
    run (per batch), in ms, and the rows per batch."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    def mean_ms(family: str) -> Optional[float]:
        count = delta(f"tractor_inference_{family}_seconds_count")
        return delta(f"tractor_inference_{family}_seconds_sum") / count * 1e3 if count else None

    batches = delta("tractor_inference_batch_size_count")
    return {"request_ms": mean_ms("request_duration"), "queue_ms": mean_ms("queue_duration"),
            "compute_ms": mean_ms("compute_duration"),
            "batch_rows": delta("tractor_inference_batch_size_sum") / batches if batches else None}


def onnxruntime_row_ms(model: BenchModel, cpus: str, seconds: float) -> Dict[str, float]:
    """onnxruntime's own time for one batch-1 run, in this process, pinned where the servers run (1 thread): the
    compute a peer cannot do faster, to set against tractor's compute per batch."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model.path), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    feed = {model.input_name: model.rows[:1]}
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(cpu) for cpu in expand_cpus(cpus)})
    try:
        for _ in range(5):
            session.run(None, feed)
        timings = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(timings) < 20:
            begin = time.perf_counter()
            session.run(None, feed)
            timings.append((time.perf_counter() - begin) * 1e3)
    finally:
        os.sched_setaffinity(0, mine)
    return {"median_ms": float(np.median(timings)), "p99_ms": float(np.percentile(timings, 99)),
            "runs": len(timings)}


@dataclass
class Context:
    settings: Settings
    installed: Installed
    tools: Tools
    ports: PortPool
    runs: Path


def run_load(context: Context, spec: ServerSpec, model: BenchModel, ports: Ports, result: PairResult,
             names: List[str]) -> None:
    settings, tools = context.settings, context.tools
    cpus, seconds = settings.loadgen_cpus, settings.cell_seconds
    work = context.runs / f"{model.name}-{spec.name}"
    url = f"http://127.0.0.1:{ports.http}{spec.infer_path}"
    json_body = work / "body.json"
    for concurrency in CONCURRENCIES:
        before = tractor_metrics(ports.http) if spec.name == "tractor" else {}
        cell = load.wrk(tools.wrk, cpus, url, json_body, JSON_HEADERS, concurrency, seconds).to_json()
        if spec.name == "tractor":
            cell["server_split"] = metrics_split(before, tractor_metrics(ports.http))
        result.rest.append(cell)
    if spec.name == "tractor":
        binary_body, binary_headers = v2_binary_body(model, model.rows[0], names)
        (work / "body.bin").write_bytes(binary_body)
        for concurrency in CONCURRENCIES:
            result.binary.append(load.wrk(tools.wrk, cpus, url, work / "body.bin", binary_headers, concurrency,
                                          seconds).to_json())
    if spec.grpc:
        (work / "body.grpc.json").write_bytes(grpc_json_body(model, model.rows[0]))
        for concurrency in CONCURRENCIES:
            result.grpc.append(load.ghz(tools.ghz, cpus, f"127.0.0.1:{ports.grpc}", GRPC_PROTO,
                                        work / "body.grpc.json", concurrency, seconds).to_json())
    capacity = max(cell["rate"] for cell in result.rest)

    def probe(rate: float) -> load.LoadResult:
        return load.vegeta(tools.vegeta, cpus, url, json_body, JSON_HEADERS, rate, settings.probe_seconds)

    result.sustained = find_sustained_rate(probe, capacity, settings.probes)


def bench_pair(context: Context, spec: ServerSpec, model: BenchModel, names: List[str],
               expected: List[Dict[str, np.ndarray]]) -> PairResult:
    result = PairResult(server=spec.name, model=model.name)
    work = context.runs / f"{model.name}-{spec.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ready_body = request_body(spec, model, model.rows[0])
    server: Optional[RunningServer] = None
    try:
        for start in range(context.settings.starts):
            ports = Ports(context.ports.take(), context.ports.take(), context.ports.take())
            launch = spec.launch(spec, context.installed, model, ports, work)
            server = RunningServer(spec, launch, context.settings, work / "server.log")
            result.start_ms.append(server.wait_ready(ports.http, spec.infer_path, ready_body, JSON_HEADERS))
            log(f"{model.name:6} {spec.name:8} ready in {result.start_ms[-1]:8.1f} ms")
            if start < context.settings.starts - 1:
                server.stop()
                server = None
        assert server is not None
        result.check = check_answers(spec, model, ports.http, expected)
        if spec.name == "tractor":
            result.check["binary"] = check_binary_answers(model, ports.http, names, expected)
            result.check["valid"] = result.check["valid"] and result.check["binary"]["valid"]
        result.valid = bool(result.check["valid"])
        if not result.valid:
            log(f"{model.name:6} {spec.name:8} answers DISAGREE with onnxruntime: {result.check['detail']}")
        (work / "body.json").write_bytes(ready_body)
        load.wrk(context.tools.wrk, context.settings.loadgen_cpus, f"http://127.0.0.1:{ports.http}{spec.infer_path}",
                 work / "body.json", JSON_HEADERS, 8, context.settings.warmup_seconds)
        result.memory = memory_of(server.process)
        run_load(context, spec, model, ports, result, names)
        result.memory.update({f"end_{key}": value for key, value in memory_of(server.process).items()})
        if spec.name == "tractor":
            result.tractor_metrics = tractor_metrics(ports.http)
        log(f"{model.name:6} {spec.name:8} done: REST c=1/8/32 "
            + " / ".join(f"{cell['rate']:.0f}" for cell in result.rest)
            + f" req/s; sustained {result.sustained['rate']:.0f} req/s; PSS {result.memory['pss_mib']:.0f} MiB")
    except (BenchError, load.LoadError, OSError, http.client.HTTPException, KeyError, ValueError) as error:
        result.error = str(error)
        log(f"{model.name:6} {spec.name:8} FAILED: {error}")
    finally:
        if server is not None:
            server.stop()
    return result


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`, each inode once, symlinks not followed (what `du -sb` counts)."""
    seen, total = set(), 0
    for root, _, files in os.walk(folder):
        for name in files:
            stat = os.lstat(os.path.join(root, name))
            if stat.st_ino not in seen:
                seen.add(stat.st_ino)
                total += stat.st_size
    return total


def tractor_image_size(tractor: Path, image: Optional[Path]) -> Dict[str, float]:
    """The image's files (the binary and the libraries `ldd` lists, as scripts/image.sh packs them), and the OCI
    archive's size when one was built."""
    libraries = []
    done = subprocess.run(["ldd", str(tractor)], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libraries.append(Path(parts[2]))
        elif parts and parts[0].startswith("/"):
            libraries.append(Path(parts[0]))
    files = tractor.stat().st_size + sum(library.resolve().stat().st_size for library in libraries)
    sizes = {"files_mib": files / MIB, "binary_mib": tractor.stat().st_size / MIB}
    if image and image.is_file():
        sizes["archive_mib"] = image.stat().st_size / MIB
    return sizes


def tool_versions(tools: Tools) -> Dict[str, str]:
    """wrk says its version; the Go tools, built by `go install`, do not, so their folder
    (scripts/bench-tools.sh installs each into `<tool>-<version>/`) names it."""
    try:
        done = subprocess.run([str(tools.wrk), "-v"], capture_output=True, text=True, timeout=30)
        wrk_version = ((done.stdout or done.stderr).strip().splitlines() or ["unknown"])[0].split(" Copyright")[0]
    except (OSError, subprocess.TimeoutExpired):
        wrk_version = "unknown"
    return {"wrk": wrk_version, "vegeta": tools.vegeta.parent.name.removeprefix("vegeta-"),
            "ghz": tools.ghz.parent.name.removeprefix("ghz-")}


def versions(installed: Installed, tools: Tools, servers: List[ServerSpec]) -> Dict[str, object]:
    def output(command: List[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"

    rev = output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "crates", "Cargo.lock"], cwd=REPO).returncode
    found: Dict[str, object] = {
        "tractor": output([str(installed.tractor), "--version"]),
        "tractor_rev": rev + ("+dirty" if dirty else ""),
        "driver_onnxruntime": onnxruntime.__version__,
        "tools": tool_versions(tools),
    }
    for spec in servers:
        if spec.package:
            found[spec.name] = package_versions(spec.python(installed.venvs), [spec.package, "onnxruntime", "numpy"])
    return found


def host_description(settings: Settings) -> Dict[str, str]:
    host = machine()
    load_average = Path("/proc/loadavg").read_text().split()[:3]
    host.update({"server_cpus": settings.server_cpus, "loadgen_cpus": settings.loadgen_cpus,
                 "load_average_at_start": " ".join(load_average)})
    return host


def raise_priority() -> int:
    """Every process this driver starts (servers, load generators) inherits its niceness: at -10 they run ahead of
    background work on a shared machine (builds), which otherwise lands on both pinned CPUs and shows up as
    latency. The same for every server, so the comparison stays fair; where the OS refuses (not root), 0."""
    try:
        return os.nice(PRIORITY_NICENESS - os.nice(0))
    except PermissionError:
        return os.nice(0)


def read_tools(path: Path) -> Tools:
    found = dict(line.strip().split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return Tools(wrk=Path(found["wrk"]), vegeta=Path(found["vegeta"]), ghz=Path(found["ghz"]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tractor", type=Path, required=True, help="the release `tractor` binary")
    parser.add_argument("--venvs", type=Path, required=True, help="folder holding one `<server>-venv` per peer")
    parser.add_argument("--tools", type=Path, required=True, help="`name=path` lines from scripts/bench-tools.sh")
    parser.add_argument("--out", type=Path, required=True, help="work folder: logs, bodies, results.json")
    parser.add_argument("--models-dir", type=Path, required=True, help="cache folder for the generated models")
    parser.add_argument("--image", type=Path, help="tractor's OCI archive (scripts/image.sh), for its size")
    parser.add_argument("--report", type=Path, default=REPO / "docs/bench/REPORT.md", help="the report to write")
    parser.add_argument("--quick", action="store_true", help="a few seconds per cell, one start per server")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of servers")
    parser.add_argument("--models", default=",".join(GENERATORS), help="comma-separated subset of models")
    parser.add_argument("--server-cpus", default="0", help="taskset list for the servers")
    parser.add_argument("--loadgen-cpus", default="1", help="taskset list for the load generators and this driver")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = Settings.make(args.quick, args.server_cpus, args.loadgen_cpus)
    host = host_description(settings)
    host["niceness"] = raise_priority()
    # This driver polls and parses; it stays off the server's core(s).
    os.sched_setaffinity(0, {int(cpu) for cpu in expand_cpus(settings.loadgen_cpus)})
    started = time.perf_counter()
    servers = [SERVERS[name] for name in args.servers.split(",")]
    installed = Installed(tractor=args.tractor.resolve(), venvs=args.venvs.resolve())
    tools = read_tools(args.tools)
    out = args.out.resolve()
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    models = ensure_models(args.models_dir.resolve(), args.models.split(","))
    context = Context(settings=settings, installed=installed, tools=tools, ports=PortPool(), runs=runs)
    results: List[PairResult] = []
    reference_ms = {}
    for model in models:
        names, expected = reference_outputs(model)
        reference_ms[model.name] = onnxruntime_row_ms(model, settings.server_cpus, settings.warmup_seconds)
        for spec in servers:
            results.append(bench_pair(context, spec, model, names, expected))
    install = {spec.name: {"venv_mib": folder_bytes(installed.venvs / f"{spec.name}-venv") / MIB}
               for spec in servers if spec.package}
    install["tractor"] = tractor_image_size(installed.tractor, args.image)
    payload = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": settings.quick,
        "settings": settings.__dict__,
        "machine": host,
        "versions": versions(installed, tools, servers),
        "configuration": {spec.name: CONFIGURATION[spec.name] for spec in servers},
        "titles": {spec.name: spec.title for spec in servers},
        "models": [{"name": model.name, "title": model.title, "parameters": model.parameters,
                    "file_mib": model.file_bytes / MIB, "input": model.input_name, "row_shape": model.row_shape,
                    "bound": model.bound} for model in models],
        "install": install,
        "onnxruntime_in_process": reference_ms,
        "results": [result.__dict__ for result in results],
        "wall_seconds": time.perf_counter() - started,
        "p99_limit_ms": P99_LIMIT_MS,
        "concurrencies": CONCURRENCIES,
    }
    payload["machine"]["load_average_at_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    report.write(payload, args.report)
    log(f"wrote {args.report} and its plots ({payload['wall_seconds']:.0f} s)")


def expand_cpus(cpus: str) -> List[str]:
    """`0`, `1-3`, `0,2` -> the CPU numbers, as taskset reads them."""
    found = []
    for part in cpus.split(","):
        if "-" in part:
            first, last = part.split("-")
            found += [str(cpu) for cpu in range(int(first), int(last) + 1)]
        else:
            found.append(part)
    return found


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        print(f"[bench] {error}", file=sys.stderr)
        sys.exit(1)
