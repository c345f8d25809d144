"""make bench, load: runs the established load generators on their own core and reads their results into one shape.

- wrk (closed loop, HTTP/1.1 keep-alive, one thread, C connections each with one request in flight), through
  scripts/bench_peers_wrk.lua, which prints the counters and percentiles as JSON;
- vegeta (open loop: requests start at a fixed rate whatever the answers do), `attack | report -type=json`;
- ghz (gRPC, C concurrent calls multiplexed on one HTTP/2 connection), `-O json`.

Every run is `taskset -c LOADGEN_CPUS ...`, bounded in time (the tool's own duration plus a margin), and returns a
`LoadResult`: requests, achieved rate, errors by kind, latency percentiles in ms.
"""
import json
import os
import resource
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

WRK_SCRIPT = Path(__file__).resolve().parent / "bench_peers_wrk.lua"
# ghz cancels the calls still in flight when its duration ends and counts them as errors; they are not the
# server's, and at most `concurrency` of them can happen (see `read_ghz`).
# vegeta's keep-alive pool, like a proxy's in front of the server. Uncapped, it opens a connection for every
# request in flight as soon as answers lag, and the burst of connects overflows the server's listen queue: dropped
# SYNs are retried after 1 s, and every server, tractor included, showed a p99 of 2 s at a tenth of its capacity.
# 64 in flight is more than any rate within the p99 limit needs (rate x latency).
VEGETA_CONNECTIONS = 64
GHZ_END_OF_RUN_ERRORS = ("use of closed network connection", "context canceled", "Canceled", "transport is closing")


@dataclass
class LoadResult:
    """One load cell, whatever the tool."""

    tool: str
    concurrency: int = 0  # closed loop: connections (wrk) or concurrent calls (ghz)
    target_rate: float = 0.0  # open loop (vegeta): requests per second asked for
    sent_rate: float = 0.0  # open loop: requests per second vegeta managed to start
    loadgen_busy: float = 0.0  # open loop: vegeta's CPU seconds per second of attack (1.0: its core is full)
    seconds: float = 0.0
    requests: int = 0
    rate: float = 0.0  # answered requests per second
    errors: Dict[str, int] = field(default_factory=dict)
    latency_ms: Dict[str, float] = field(default_factory=dict)  # p50, p90, p99, max, mean
    cdf: List[Tuple[float, float]] = field(default_factory=list)  # (percentile, ms)
    note: str = ""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict:
        return {**asdict(self), "error_count": self.error_count}


class LoadError(RuntimeError):
    pass


def pinned(cpus: str, command: List[str]) -> List[str]:
    return ["taskset", "-c", cpus, *command]


def run_tool(command: List[str], seconds: float, env: Optional[Dict[str, str]] = None,
             stdin: Optional[bytes] = None) -> str:
    """Runs a load generator to completion; its stdout. A run that outlives its duration by a minute is killed."""
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=seconds + 60,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as error:
        raise LoadError(f"{command[3]} did not finish within {seconds + 60:.0f} s") from error
    if done.returncode != 0:
        raise LoadError(f"{' '.join(command[:5])}... exited {done.returncode}: "
                        f"{done.stderr.decode(errors='replace')[-800:]}")
    return done.stdout.decode(errors="replace")


def wrk(tool: Path, cpus: str, url: str, body: Path, headers: Dict[str, str], concurrency: int,
        seconds: float) -> LoadResult:
    env = {"BENCH_BODY": str(body), "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in headers.items())}
    command = pinned(cpus, [str(tool), "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s",
                            "-s", str(WRK_SCRIPT), url])
    output = run_tool(command, seconds, env=env)
    line = next((line for line in output.splitlines() if line.startswith("BENCH-WRK ")), None)
    if line is None:
        raise LoadError(f"wrk printed no BENCH-WRK line:\n{output[-800:]}")
    summary = json.loads(line[len("BENCH-WRK "):])
    duration = summary["duration_us"] / 1e6
    errors = {kind: count for kind, count in summary["errors"].items() if count}
    # wrk counts a non-2xx answer as a request too; only the good ones make the rate.
    good = summary["requests"] - summary["errors"]["status"]
    points = [(float(pct), value / 1e3) for pct, value in summary["latency_us"]["percentiles"]]
    lookup = dict(points)
    return LoadResult(
        tool="wrk", concurrency=concurrency, seconds=duration, requests=summary["requests"],
        rate=good / duration if duration else 0.0, errors=errors,
        latency_ms={"p50": lookup[50.0], "p90": lookup[90.0], "p99": lookup[99.0],
                    "max": summary["latency_us"]["max"] / 1e3,
                    "mean": summary["latency_us"]["mean"] / 1e3},
        cdf=points)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def vegeta(tool: Path, cpus: str, url: str, body: Path, headers: Dict[str, str], rate: float,
           seconds: float) -> LoadResult:
    target = "\n".join([f"POST {url}", *(f"{name}: {value}" for name, value in headers.items()), f"@{body}", ""])
    rate_arg = f"{max(1, round(rate))}/1s"
    attack = pinned(cpus, [str(tool), "attack", "-format=http", f"-rate={rate_arg}", f"-duration={seconds:g}s",
                           "-timeout=10s", "-keepalive=true", f"-connections={VEGETA_CONNECTIONS}",
                           f"-max-connections={VEGETA_CONNECTIONS}"])
    used_before = children_cpu_seconds()
    try:
        done = subprocess.run(attack, input=target.encode(), capture_output=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired as error:
        raise LoadError(f"vegeta attack did not finish within {seconds + 60:.0f} s") from error
    busy = (children_cpu_seconds() - used_before) / seconds
    if done.returncode != 0:
        raise LoadError(f"vegeta attack exited {done.returncode}: {done.stderr.decode(errors='replace')[-800:]}")
    report = json.loads(run_tool(pinned(cpus, [str(tool), "report", "-type=json"]), 30, stdin=done.stdout))
    latencies = report["latencies"]
    codes = report.get("status_codes") or {}
    errors = {f"status {code}": count for code, count in codes.items() if not code.startswith("2")}
    return LoadResult(
        tool="vegeta", target_rate=rate, seconds=report["duration"] / 1e9, requests=report["requests"],
        # vegeta's `rate` is what it managed to send; `throughput` the successful answers per second.
        sent_rate=report["rate"], loadgen_busy=busy, rate=report["throughput"], errors=errors,
        latency_ms={"p50": latencies["50th"] / 1e6, "p90": latencies["90th"] / 1e6,
                    "p99": latencies["99th"] / 1e6, "max": latencies["max"] / 1e6,
                    "mean": latencies["mean"] / 1e6})


def ghz(tool: Path, cpus: str, address: str, proto: Path, body: Path, concurrency: int,
        seconds: float) -> LoadResult:
    command = pinned(cpus, [str(tool), "--insecure", "--proto", str(proto), "--import-paths", str(proto.parent),
                            "--call", "inference.GRPCInferenceService/ModelInfer", "-D", str(body),
                            "-c", str(concurrency), "-z", f"{seconds:g}s", "--connections", "1", "--cpus", "1",
                            "--timeout", "10s", "-O", "json", address])
    return read_ghz(json.loads(run_tool(command, seconds)), concurrency)


def read_ghz(report: dict, concurrency: int) -> LoadResult:
    errors: Dict[str, int] = {}
    cancelled = 0
    for message, count in (report.get("errorDistribution") or {}).items():
        if any(marker in message for marker in GHZ_END_OF_RUN_ERRORS):
            cancelled += count
        else:
            errors[message[:120]] = count
    if cancelled > concurrency:
        errors["cancelled before the end of the run"] = cancelled
        cancelled = 0
    points = {entry["percentage"]: entry["latency"] / 1e6 for entry in report.get("latencyDistribution") or []}
    seconds = report["total"] / 1e9
    good = report["count"] - sum((report.get("errorDistribution") or {}).values())
    return LoadResult(
        tool="ghz", concurrency=concurrency, seconds=seconds, requests=report["count"],
        rate=good / seconds if seconds else 0.0, errors=errors,
        latency_ms={"p50": points.get(50, float("nan")), "p90": points.get(90, float("nan")),
                    "p99": points.get(99, float("nan")), "max": report["slowest"] / 1e6,
                    "mean": report["average"] / 1e6},
        cdf=sorted(points.items()),
        note=f"{cancelled} calls cut by ghz at the end of the run, not counted" if cancelled else "")
