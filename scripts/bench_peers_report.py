#!/usr/bin/env python3
"""make bench, report: docs/bench/REPORT.md and its PNG plots, drawn from the results.json scripts/bench_peers.py
writes. Tables carry tractor ÷ each peer; the goals of the issue are checked and reported, never asserted.

    python scripts/bench_peers_report.py bench/peers/results.json [--report docs/bench/REPORT.md]
"""
import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
COLORS = {"tractor": "#d62728", "kserve": "#1f77b4", "mlserver": "#2ca02c", "bentoml": "#9467bd", "ray": "#ff7f0e"}
# Goals of the issue (reported, not asserted).
OVERHEAD_RATE_RATIO = 20.0
OVERHEAD_P99_RATIO = 10.0
COMPUTE_RATE_RATIO = 1.0
MEMORY_RATIO = 5.0
START_RATIO = 20.0


class Results:
    """results.json with lookups by (model, server)."""

    def __init__(self, payload: dict) -> None:
        self.payload = payload
        self.servers: List[str] = list(payload["titles"])
        self.peers = [name for name in self.servers if name != "tractor"]
        self.models: List[dict] = payload["models"]
        self.by_pair = {(row["model"], row["server"]): row for row in payload["results"]}

    def title(self, server: str) -> str:
        return self.payload["titles"][server]

    def pair(self, model: str, server: str) -> Optional[dict]:
        return self.by_pair.get((model, server))

    def usable(self, model: str, server: str) -> Optional[dict]:
        """The pair's results if it ran and its answers agreed with onnxruntime; None otherwise."""
        row = self.pair(model, server)
        if row is None or row["error"] or not row["valid"]:
            return None
        return row

    def rest_cell(self, model: str, server: str, concurrency: int, kind: str = "rest") -> Optional[dict]:
        row = self.usable(model, server)
        if row is None:
            return None
        return next((cell for cell in row[kind] if cell["concurrency"] == concurrency), None)

    def sustained(self, model: str, server: str) -> Optional[float]:
        row = self.usable(model, server)
        return row["sustained"].get("rate") if row and row["sustained"] else None

    def best_peer(self, model: str, value, higher_is_better: bool = True) -> Optional[tuple]:
        """(peer, value) of the best peer by `value(model, peer)`, among those with a value."""
        scored = [(peer, value(model, peer)) for peer in self.peers]
        scored = [(peer, score) for peer, score in scored if score]
        if not scored:
            return None
        return max(scored, key=lambda item: item[1]) if higher_is_better else min(scored, key=lambda item: item[1])


def rate_text(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value / 1000:.1f} k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def ms_text(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def ratio_text(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}×" if value < 100 else f"{value:.0f}×"


def divide(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def pair_status(results: Results, model: str, server: str) -> str:
    row = results.pair(model, server)
    if row is None:
        return "not run"
    if row["error"]:
        return "failed: " + row["error"].splitlines()[0][:100]
    if not row["valid"]:
        return "INVALID: " + str(row["check"].get("detail", ""))[:100]
    return ""


def errors_text(cells: List[dict]) -> str:
    total = sum(cell["error_count"] for cell in cells)
    if not total:
        return "0"
    kinds = sorted({kind for cell in cells for kind in cell["errors"]})
    return f"**{total}** ({', '.join(kinds)[:60]})"


def headline_table(results: Results) -> List[str]:
    lines = ["| model | " + " | ".join(results.title(server) for server in results.servers) + " |",
             "|---|" + "---:|" * len(results.servers)]
    for model in results.models:
        tractor_rate = results.sustained(model["name"], "tractor")
        cells = []
        for server in results.servers:
            status = pair_status(results, model["name"], server)
            if status:
                cells.append(status.split(":")[0])
                continue
            row = results.pair(model["name"], server)
            rate = row["sustained"].get("rate")
            p99 = row["sustained"].get("p99_ms")
            bound = "≥ " if row["sustained"].get("generator_bound") else ""
            text = f"{bound}{rate_text(rate)} (p99 {ms_text(p99)} ms)" if rate else "none ≤ 50 ms"
            if server != "tractor":
                text += f" · **{ratio_text(divide(tractor_rate, rate))}**"
            cells.append(text)
        lines.append(f"| {model['name']} | " + " | ".join(cells) + " |")
    return lines


def closed_loop_table(results: Results, model: str, kind: str) -> List[str]:
    concurrencies = results.payload["concurrencies"]
    header = (["server"] + [f"c={level} req/s" for level in concurrencies]
              + [f"p99 ms c={level}" for level in concurrencies]
              + ["errors", "tractor ÷ server (c=" + "/".join(map(str, concurrencies)) + ")"])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 2) + "---|"]
    rows = [(server, kind) for server in results.servers if kind == "rest" or results.pair(model, server) and
            results.pair(model, server)[kind]]
    if kind == "rest":
        rows.insert(1, ("tractor", "binary"))
    for server, cell_kind in rows:
        label = results.title(server) + (" (binary)" if cell_kind == "binary" else "")
        status = pair_status(results, model, server)
        if status:
            lines.append(f"| {label} | {status} |" + " |" * (len(header) - 2))
            continue
        cells = [results.rest_cell(model, server, level, cell_kind) for level in concurrencies]
        tractor_cells = [results.rest_cell(model, "tractor", level, kind) for level in concurrencies]
        ratios = "/".join(ratio_text(divide(mine["rate"] if mine else None, theirs["rate"] if theirs else None))
                          for mine, theirs in zip(tractor_cells, cells))
        lines.append(f"| {label} | " + " | ".join(rate_text(cell["rate"]) for cell in cells) + " | "
                     + " | ".join(ms_text(cell["latency_ms"]["p99"]) for cell in cells) + " | "
                     + errors_text(cells) + f" | {ratios if server != 'tractor' else ''} |")
    return lines


def vegeta_note(probe: dict) -> str:
    if not probe["generator_bound"]:
        return ""
    return f" (vegeta-bound: sent {rate_text(probe['sent_rate'])}, {probe.get('loadgen_busy', 0):.0%} of its CPU)"


def open_loop_table(results: Results, model: str) -> List[str]:
    lines = ["| server | highest rate, p99 ≤ 50 ms | p50 ms | p99 ms | tractor ÷ server | probes (rate asked → "
             "p99 ms, ✓/✗) |", "|---|---:|---:|---:|---:|---|"]
    tractor_rate = results.sustained(model, "tractor")
    for server in results.servers:
        status = pair_status(results, model, server)
        if status:
            lines.append(f"| {results.title(server)} | {status} | | | | |")
            continue
        sustained = results.pair(model, server)["sustained"]
        probes = ", ".join(
            f"{rate_text(probe['target_rate'])} → {ms_text(probe['latency_ms'].get('p99'))}"
            f"{' ✓' if probe['passed'] else ' ✗'}"
            f"{vegeta_note(probe)}"
            f"{' ' + str(probe['error_count']) + ' err' if probe['error_count'] else ''}"
            for probe in sustained["probes"])
        bound = "≥ " if sustained.get("generator_bound") else ""
        ratio = "" if server == "tractor" else ratio_text(divide(tractor_rate, sustained.get("rate")))
        lines.append(f"| {results.title(server)} | {bound}{rate_text(sustained.get('rate') or None)} | "
                     f"{ms_text(sustained.get('p50_ms'))} | {ms_text(sustained.get('p99_ms'))} | {ratio} | "
                     f"{probes} |")
    return lines


def footprint_tables(results: Results) -> List[str]:
    """Start -> ready and install size in one table, memory after the warm-up in another."""
    models = [model["name"] for model in results.models]
    install = results.payload["install"]
    starts = ["| server | " + " | ".join(f"start → ready ms, {name}" for name in models) + " | install MiB |",
              "|---|" + "---:|" * (len(models) + 1)]
    memory = ["| server | " + " | ".join(f"PSS / RSS MiB, {name}" for name in models) + " | processes |",
              "|---|" + "---:|" * (len(models) + 1)]
    for server in results.servers:
        start_cells, memory_cells, processes = [], [], set()
        for name in models:
            row = results.pair(name, server)
            start_cells.append(ms_text(statistics.median(row["start_ms"])) if row and row["start_ms"] else "—")
            if row and row["memory"]:
                memory_cells.append(f"{row['memory']['pss_mib']:.0f} / {row['memory']['rss_mib']:.0f}")
                processes.add(int(row["memory"]["processes"]))
            else:
                memory_cells.append("—")
        size = install.get(server, {})
        size_text = (f"{size['files_mib']:.0f} (image's files; OCI archive {size.get('archive_mib', 0):.0f})"
                     if server == "tractor" else f"{size.get('venv_mib', 0):.0f} (venv)")
        starts.append(f"| {results.title(server)} | " + " | ".join(start_cells) + f" | {size_text} |")
        memory.append(f"| {results.title(server)} | " + " | ".join(memory_cells) + " | "
                      + ", ".join(map(str, sorted(processes))) + " |")
    return starts + [""] + memory


def footprint_ratios(results: Results) -> List[str]:
    """Each peer ÷ tractor on start, PSS and install size, per model (start and memory) and overall (size)."""
    lines = ["| peer ÷ tractor | " + " | ".join(f"start, {model['name']}" for model in results.models)
             + " | " + " | ".join(f"PSS, {model['name']}" for model in results.models) + " | install |",
             "|---|" + "---:|" * (2 * len(results.models) + 1)]
    install = results.payload["install"]
    for peer in results.peers:
        starts, memory = [], []
        for model in results.models:
            mine, theirs = results.pair(model["name"], "tractor"), results.pair(model["name"], peer)
            both = mine and theirs and mine["start_ms"] and theirs["start_ms"]
            starts.append(ratio_text(divide(statistics.median(theirs["start_ms"]), statistics.median(mine["start_ms"])))
                          if both else "—")
            both_memory = mine and theirs and mine["memory"] and theirs["memory"]
            memory.append(ratio_text(divide(theirs["memory"]["pss_mib"], mine["memory"]["pss_mib"]))
                          if both_memory else "—")
        size = ratio_text(divide(install.get(peer, {}).get("venv_mib"), install["tractor"]["files_mib"]))
        lines.append(f"| {results.title(peer)} | " + " | ".join(starts + memory) + f" | {size} |")
    return lines


def time_split_table(results: Results) -> List[str]:
    """tractor's own account of a request (its /metrics over each REST cell) against onnxruntime's in-process
    compute for the same batch-1 run."""
    lines = ["| model | c | client mean ms (wrk) | server request ms | queue ms | compute ms per batch | rows per "
             "batch | compute ms per row | onnxruntime in-process ms per row | tract ÷ onnxruntime |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    reference = results.payload.get("onnxruntime_in_process", {})
    for model in results.models:
        row = results.pair(model["name"], "tractor")
        if row is None or row["error"]:
            continue
        ort = reference.get(model["name"], {}).get("median_ms")
        for cell in row["rest"]:
            split = cell.get("server_split") or {}
            compute, rows = split.get("compute_ms"), split.get("batch_rows")
            per_row = compute / rows if compute and rows else None
            lines.append(
                f"| {model['name']} | {cell['concurrency']} | {ms_text(cell['latency_ms']['mean'])} | "
                f"{ms_text(split.get('request_ms'))} | {ms_text(split.get('queue_ms'))} | {ms_text(compute)} | "
                f"{rows:.1f} | {ms_text(per_row)} | {ms_text(ort)} | "
                f"{ratio_text(divide(compute, ort)) if cell['concurrency'] == 1 else ''} |"
                if rows else f"| {model['name']} | {cell['concurrency']} | | | | | | | | |")
    return lines


def correctness_table(results: Results) -> List[str]:
    lines = ["| model | " + " | ".join(results.title(server) for server in results.servers) + " |",
             "|---|" + "---|" * len(results.servers)]
    for model in results.models:
        cells = []
        for server in results.servers:
            row = results.pair(model["name"], server)
            if row is None or not row["check"]:
                reason = f" ({row['error'].splitlines()[0][:60]})" if row and row["error"] else ""
                cells.append("not checked" + reason)
            elif row["valid"]:
                cells.append(f"✓ max rel {row['check']['max_rel']:.1e}")
            else:
                cells.append(f"✗ {row['check']['detail'][:80]}")
        lines.append(f"| {model['name']} | " + " | ".join(cells) + " |")
    return lines


def goal_line(met: Optional[bool], text: str) -> str:
    mark = "✓" if met else ("✗" if met is False else "?")
    return f"- {mark} {text}"


def overhead_goals(results: Results, model: str) -> List[str]:
    lines = []
    mine = results.sustained(model, "tractor")
    best = results.best_peer(model, results.sustained)
    if mine and best:
        ratio = mine / best[1]
        lines.append(goal_line(ratio >= OVERHEAD_RATE_RATIO,
                               f"{model}: sustained rate ≥ {OVERHEAD_RATE_RATIO:.0f}× the best peer's: tractor "
                               f"{rate_text(mine)}/s vs {results.title(best[0])} {rate_text(best[1])}/s = "
                               f"{ratio_text(ratio)}"
                               + (" (tractor's rate is vegeta's ceiling on one core: a lower bound)"
                                  if results.pair(model, "tractor")["sustained"].get("generator_bound") else "")))
    else:
        lines.append(goal_line(None, f"{model}: sustained rate: not measured for tractor or any peer"))
    for concurrency in results.payload["concurrencies"]:
        def p99(name: str, peer: str, c: int = concurrency) -> Optional[float]:
            cell = results.rest_cell(name, peer, c)
            return cell["latency_ms"]["p99"] if cell else None

        mine_p99 = p99(model, "tractor")
        best_p99 = results.best_peer(model, p99, higher_is_better=False)
        if mine_p99 and best_p99:
            ratio = best_p99[1] / mine_p99
            lines.append(goal_line(ratio >= OVERHEAD_P99_RATIO,
                                   f"{model}, c={concurrency}: p99 ≤ 1/{OVERHEAD_P99_RATIO:.0f} of the best peer's: "
                                   f"tractor {ms_text(mine_p99)} ms vs {results.title(best_p99[0])} "
                                   f"{ms_text(best_p99[1])} ms (theirs is {ratio_text(ratio)})"))
    return lines


def compute_goals(results: Results, model: str) -> List[str]:
    lines = []
    checks = [("sustained rate (p99 ≤ 50 ms)", results.sustained)]
    for concurrency in results.payload["concurrencies"]:
        def rate(name: str, server: str, c: int = concurrency) -> Optional[float]:
            cell = results.rest_cell(name, server, c)
            return cell["rate"] if cell else None
        checks.append((f"closed loop c={concurrency}", rate))
    for label, value in checks:
        mine, best = value(model, "tractor"), results.best_peer(model, value)
        if mine and best:
            ratio = mine / best[1]
            lines.append(goal_line(ratio >= COMPUTE_RATE_RATIO,
                                   f"{model}, {label}: ≥ {COMPUTE_RATE_RATIO:.1f}× the best peer: tractor "
                                   f"{rate_text(mine)}/s vs {results.title(best[0])} {rate_text(best[1])}/s = "
                                   f"{ratio_text(ratio) if ratio >= 0.1 else f'{ratio:.2f}×'}"))
        else:
            lines.append(goal_line(None, f"{model}, {label}: not measured for tractor or any peer"))
    return lines


def footprint_goals(results: Results) -> List[str]:
    lines = []
    for model in results.models:
        mine = results.pair(model["name"], "tractor")
        peers = [(peer, results.pair(model["name"], peer)) for peer in results.peers]
        peers = [(peer, row) for peer, row in peers if row and row["memory"] and row["start_ms"]]
        if not (mine and mine["memory"] and mine["start_ms"] and peers):
            continue
        leanest = min(peers, key=lambda item: item[1]["memory"]["pss_mib"])
        ratio = leanest[1]["memory"]["pss_mib"] / mine["memory"]["pss_mib"]
        lines.append(goal_line(ratio >= MEMORY_RATIO,
                               f"{model['name']}: memory after warm-up ≤ 1/{MEMORY_RATIO:.0f} of the leanest peer's "
                               f"(PSS): tractor {mine['memory']['pss_mib']:.0f} MiB vs {results.title(leanest[0])} "
                               f"{leanest[1]['memory']['pss_mib']:.0f} MiB ({ratio_text(ratio)})"))
        fastest = min(peers, key=lambda item: statistics.median(item[1]["start_ms"]))
        start_ratio = statistics.median(fastest[1]["start_ms"]) / statistics.median(mine["start_ms"])
        lines.append(goal_line(start_ratio >= START_RATIO,
                               f"{model['name']}: start → ready ≥ {START_RATIO:.0f}× faster than the fastest "
                               "peer: "
                               f"tractor {ms_text(statistics.median(mine['start_ms']))} ms vs "
                               f"{results.title(fastest[0])} {ms_text(statistics.median(fastest[1]['start_ms']))} ms "
                               f"({ratio_text(start_ratio)})"))
    return lines


def invalid_notes(results: Results) -> List[str]:
    notes = []
    for model in results.models:
        for server in results.servers:
            status = pair_status(results, model["name"], server)
            if status:
                notes.append(f"- {model['name']} on {results.title(server)}: {status}")
    return notes


def versions_lines(results: Results) -> List[str]:
    versions = results.payload["versions"]
    lines = [f"- tractor: `{versions['tractor']}`, commit {versions['tractor_rev']}"]
    for peer in results.peers:
        found = versions.get(peer, {})
        package = {"kserve": "kserve", "mlserver": "mlserver", "bentoml": "bentoml", "ray": "ray"}[peer]
        lines.append(f"- {results.title(peer)}: {package} {found.get(package, '?')}, onnxruntime "
                     f"{found.get('onnxruntime', '?')}, numpy {found.get('numpy', '?')}, "
                     f"Python {found.get('python', '?')}")
    tools = versions["tools"]
    lines.append(f"- load generators: {tools['wrk']}, vegeta {tools['vegeta']}, ghz {tools['ghz']}")
    lines.append(f"- reference: onnxruntime {versions['driver_onnxruntime']} (the driver's venv)")
    return lines


def method_lines(results: Results) -> List[str]:
    payload = results.payload
    settings, host = payload["settings"], payload["machine"]
    mode = "quick (`make bench-quick`)" if payload["quick"] else "full (`make bench`)"
    return [
        f"Run: {payload['date']}, {mode}, {payload['wall_seconds'] / 60:.1f} min. Machine: {host['nproc']} CPUs "
        f"({host['cpu']}), {host['memory']}, Linux {host['kernel']}. Every server process tree ran pinned to CPU "
        f"{settings['server_cpus']} (`taskset -c {settings['server_cpus']}`, inherited by every process and thread "
        f"it starts); the load generators and the driver ran on CPU {settings['loadgen_cpus']}; all of them at "
        f"niceness {host.get('niceness', 0)}, ahead of background work. Load average "
        f"(1/5/15 min) {host['load_average_at_start']} at the start and {host['load_average_at_end']} at the end: "
        "other work on the machine shares the CPUs, so compare this run's rows with each other, not with another "
        "run's.",
        "",
        f"Each cell: {settings['cell_seconds']:g} s after a {settings['warmup_seconds']:g} s warm-up at c=8; "
        f"{settings['starts']} start(s) per server and model (median shown); open loop: up to {settings['probes']} "
        f"vegeta probes of {settings['probe_seconds']:g} s each, bisecting between 0 and 1.2× the best "
        f"closed-loop rate (from half of it) for the highest rate with p99 ≤ {payload['p99_limit_ms']:.0f} ms and "
        "no error; where vegeta fell behind its schedule or used ≥ 85 % of its core in a probe, the search stops "
        "there and the rate found is marked ≥ (a lower bound: the load generator, not the server, was the limit). "
        "Short cells make p99 noisy: `make bench` runs 10 s cells.",
        "",
        "Closed loop: wrk, 1 thread, c keep-alive connections each with one request in flight, REST JSON batch 1 "
        "(tractor's binary tensor extension as its own row); open loop: vegeta with a pool of at most 64 keep-alive "
        "connections (a request waiting for one counts that wait in its latency); gRPC: ghz, c concurrent calls on "
        "one HTTP/2 connection, typed `fp32_contents` (ghz cancels the calls in flight when its time is up; those, at"
        " most c per cell, are not counted as errors). wrk's latency has no coordinated-omission correction (it is "
        "closed loop); vegeta's open loop is where queueing shows. Start → ready: process spawn to the first 200 "
        "answer to a real inference request (polled every 2 ms), the same definition for every server. Memory: RSS "
        "and PSS summed over the server's process tree after the warm-up (PSS splits shared pages between the "
        "processes that share them, so a multi-process server is not charged twice for its libraries). Install: the "
        "peer's venv (its Python interpreter and OS image not counted); tractor: the files of its image (the binary "
        "and the glibc libraries it links).",
    ]


def model_lines(results: Results) -> List[str]:
    lines = ["| model | what | parameters | file MiB | input | bound by |", "|---|---|---:|---:|---|---|"]
    for model in results.models:
        shape = "×".join(map(str, model["row_shape"]))
        lines.append(f"| {model['name']} | {model['title']} | {model['parameters']:,} | {model['file_mib']:.2f} | "
                     f"`{model['input']}` {shape} | {model['bound']} |")
    return lines


def markdown(results: Results, plots: List[str]) -> str:
    payload = results.payload
    lines = [
        "# tractor against the Python model servers",
        "",
        "Generated by `make bench` / `make bench-quick` (`scripts/bench.sh`); rewritten by every run. Same ONNX "
        "models, same CPU budget, same load, same run.",
        "",
        *method_lines(results),
        "",
        "## Headline",
        "",
        "Highest open-loop rate (vegeta) with p99 ≤ 50 ms and no error, REST JSON at batch 1, requests/s; in each "
        "peer's cell, **tractor ÷ that peer**.",
        "",
        *headline_table(results),
        "",
        *[f"![{Path(plot).stem}]({plot})" for plot in plots[:1]],
        "",
        "## Models",
        "",
        *model_lines(results),
        "",
        "Before any load, each server answered the sample rows one request each, and every output was compared "
        "with onnxruntime's (relative 1e-4, absolute floor 1e-6). A server that disagrees is marked INVALID and "
        "its cells left out of the ratios:",
        "",
        *correctness_table(results),
        "",
        "## Closed loop, REST JSON (wrk)",
        "",
    ]
    for model in results.models:
        lines += [f"### {model['name']}", "", *closed_loop_table(results, model["name"], "rest"), ""]
    lines += ["## Closed loop, gRPC (ghz)", "", "Servers that speak the V2 gRPC protocol (BentoML dropped gRPC in "
              "1.2; Ray Serve's gRPC needs user-compiled protos).", ""]
    for model in results.models:
        lines += [f"### {model['name']}", "", *closed_loop_table(results, model["name"], "grpc"), ""]
    lines += ["## Open loop, REST JSON (vegeta)", ""]
    for model in results.models:
        lines += [f"### {model['name']}", "", *open_loop_table(results, model["name"]), ""]
    lines += ["## Start, memory, size", "", *footprint_tables(results), "", *footprint_ratios(results), "",
              "## Where tractor's time goes", "",
              "From tractor's own `/metrics` over each REST cell (request = the server's whole handling; queue = "
              "waiting for the inference thread; compute = the model run of one batch), against onnxruntime running "
              "the same batch-1 input in-process on the server's CPU with one thread (the compute no peer can beat, "
              "since every peer runs onnxruntime). Client mean − server request = the network stack and wrk.", "",
              *time_split_table(results), "",
              "Profiles of the CNN and the dense net (perf, by hand, not regenerated): [PROFILE.md](PROFILE.md).", "",
              "## Goals (reported, not asserted)", ""]
    for model in results.models:
        lines += overhead_goals(results, model["name"]) if model["bound"] == "overhead" else \
            compute_goals(results, model["name"])
    lines += footprint_goals(results)
    notes = invalid_notes(results)
    if notes:
        lines += ["", "Cells left out:", "", *notes]
    lines += ["", "## How each server was run", ""]
    lines += [f"- **{results.title(server)}**: {payload['configuration'][server]}" for server in results.servers]
    lines += ["", "Versions:", "", *versions_lines(results), "", "## Plots", ""]
    lines += [f"![{Path(plot).stem}]({plot})" for plot in plots]
    return "\n".join(lines) + "\n"


def draw_throughput(results: Results, folder: Path) -> str:
    import matplotlib.pyplot as plt

    concurrencies = results.payload["concurrencies"]
    width = max(7.0, 4.2 * len(results.models))
    figure, axes = plt.subplots(1, len(results.models), figsize=(width, 3.8), squeeze=False)
    for axis, model in zip(axes[0], results.models):
        for server in results.servers:
            for kind, style in (("rest", "-"), ("binary", "--")):
                cells = [results.rest_cell(model["name"], server, level, kind) for level in concurrencies]
                if not all(cells) or (kind == "binary" and server != "tractor"):
                    continue
                label = results.title(server) + (" (binary)" if kind == "binary" else "")
                axis.plot(concurrencies, [cell["rate"] for cell in cells], style, marker="o",
                          color=COLORS.get(server), label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(concurrencies, [str(level) for level in concurrencies])
        axis.set_title(f"{model['name']}")
        axis.set_xlabel("concurrency (connections)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("requests/s (REST, batch 1)")
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Throughput vs concurrency, each server on one pinned core (wrk)")
    figure.tight_layout()
    name = "throughput.png"
    figure.savefig(folder / name, dpi=110)
    plt.close(figure)
    return name


def draw_cdf(results: Results, folder: Path, model: dict) -> str:
    import matplotlib.pyplot as plt

    concurrencies = results.payload["concurrencies"]
    figure, axes = plt.subplots(1, len(concurrencies), figsize=(4.2 * len(concurrencies), 3.6), squeeze=False,
                                sharey=True)
    for axis, concurrency in zip(axes[0], concurrencies):
        for server in results.servers:
            for kind, style in (("rest", "-"), ("binary", "--")):
                cell = results.rest_cell(model["name"], server, concurrency, kind)
                if not cell or not cell["cdf"]:
                    continue
                label = results.title(server) + (" (binary)" if kind == "binary" else "")
                points = [(max(ms, 1e-3), pct) for pct, ms in cell["cdf"]]
                axis.plot([ms for ms, _ in points], [pct for _, pct in points], style, color=COLORS.get(server),
                          label=label)
        axis.set_xscale("log")
        axis.set_title(f"c={concurrency}")
        axis.set_xlabel("latency ms (log)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("percentile")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"Latency CDF, {model['name']} ({model['title']}), REST batch 1 (wrk)")
    figure.tight_layout()
    name = f"latency_cdf_{model['name']}.png"
    figure.savefig(folder / name, dpi=110)
    plt.close(figure)
    return name


def write(payload: dict, report: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    results = Results(payload)
    folder = report.parent
    folder.mkdir(parents=True, exist_ok=True)
    plots = [draw_throughput(results, folder)] + [draw_cdf(results, folder, model) for model in results.models]
    report.write_text(markdown(results, plots))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results.json from scripts/bench_peers.py")
    parser.add_argument("--report", type=Path, default=REPO / "docs/bench/REPORT.md")
    args = parser.parse_args()
    write(json.loads(args.results.read_text()), args.report)


if __name__ == "__main__":
    main()
