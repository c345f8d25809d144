#!/usr/bin/env python3
"""make bench-coldstart, pod part: pod created -> Ready on the real node of the local cluster, for a small model
(digits, its source in a ConfigMap) and a large one (the generated ~100 MB MLP, its source on the cluster's S3
store: a ConfigMap holds at most 1 MiB), each delivered two ways: from the artifact store (the namespace holds the
store's Secret: the pod's init container downloads the published digest) and by re-derivation (no Secret: the
init container re-runs `tractor optimize`). Also the serving container's resident memory once Ready, from its own
`process_resident_memory_bytes`. Then scale to zero: both models with `minReplicas: 0`, and the first request
from zero (through the Service, held by the activator while the model wakes) timed to its answer.

It expects what `make demo` leaves running (scripts/bench-coldstart.sh runs it first): tractor installed by Helm
with the artifact store, the image on the real node. Each model gets one replica; once Ready, its pod is deleted
--runs times, and each replacement is timed from the first watch event that shows it to the first that shows it
Ready (the watch stamps arrive within milliseconds; pod timestamps have whole seconds only).

Run with the bench venv's python:
    python scripts/bench_coldstart_pods.py --out DIR [--runs 5] [--json F]
Writes DIR/pods.md; the goals are reported, never asserted.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_coldstart_process as process  # noqa: E402  (the large model's generator, shared)

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "tests/cluster/cluster.sh"
KUBECONFIG = Path(os.environ.get("TRACTOR_CLUSTER_DIR", Path.home() / ".cache/tractor/cluster")) / "admin.kubeconfig"
STORE_SECRET = "tractor-artifact-store"
# The store prefix scripts/demo.sh installs tractor with (artifactStore.uri s3://STORE_BUCKET/artifacts).
DEMO_STORE_PREFIX = "artifacts"
SOURCE_SECRET = "model-source"
MODEL_LABEL = "serving.tractor.dev/model"
READY_TIMEOUT = 600.0
MIB = 1024 * 1024
# Goals of the issue "cold start measured", reported with a mark each.
GOAL_SMALL_POD_S = 2.0
GOAL_LARGE_POD_STORE_S = 3.0
# Goal of the scale-to-zero issue: the first request to a model at zero answered within this.
GOAL_SMALL_FROM_ZERO_S = 2.0
# Scale to zero in the bench: idle this long (plus a scrape or two) before the model goes to zero again.
ZERO_IDLE_AFTER = "15s"


def cluster_value(name: str) -> str:
    """A setting of tests/cluster/cluster.sh (`NAME=value  # ...`), the one source of the cluster's addresses."""
    match = re.search(rf"^{name}=([^ \n]*)", CLUSTER_SH.read_text(), re.M)
    if not match:
        raise SystemExit(f"{name} not found in {CLUSTER_SH}")
    return match.group(1)


def kubectl_bin() -> str:
    out = subprocess.run([str(REPO / "tests/cluster/build.sh"), "--bin-dir"], check=True, capture_output=True,
                         text=True)
    return str(Path(out.stdout.strip()) / "kubectl")


KUBECTL = kubectl_bin()


def kubectl(*args: str, stdin: Optional[str] = None) -> str:
    done = subprocess.run([KUBECTL, f"--kubeconfig={KUBECONFIG}", *args], input=stdin, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def kubectl_json(*args: str) -> dict:
    return json.loads(kubectl(*args, "-o", "json"))


def apply(manifest: dict) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def s3_call(host: str, port: str, method: str, path: str, body: Optional[Path] = None) -> str:
    """One S3 request signed with AWS SigV4 by curl, as the tests do (SeaweedFS accepts the unsigned-payload
    marker)."""
    command = ["curl", "-sSf", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3",
               "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--user",
               f"{cluster_value('STORE_ACCESS_KEY')}:{cluster_value('STORE_SECRET_KEY')}"]
    if body is not None:
        command += ["--data-binary", f"@{body}"]
    done = subprocess.run([*command, f"http://{host}:{port}/{path}"], check=True, capture_output=True, text=True)
    return done.stdout


def clear_cache(host: str, port: str, bucket: str) -> None:
    """Empties the shared optimize cache `make demo` set up (`s3://bucket/artifacts`): its entries are keyed by the
    source and the recipe, not by the tractor that made them, so without this a rerun after a change to optimize
    would serve the artifacts an older build published."""
    listing = s3_call(host, port, "GET", f"{bucket}?list-type=2&prefix={DEMO_STORE_PREFIX}%2Fcache%2F")
    for key in re.findall(r"<Key>([^<]+)</Key>", listing):
        s3_call(host, port, "DELETE", f"{bucket}/{key}")


def namespace(name: str, with_store: bool) -> None:
    # Fresh each run: an existing ModelDeployment would keep the revision an older build optimized.
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=300s")
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    keys = {"AWS_ACCESS_KEY_ID": cluster_value("STORE_ACCESS_KEY"),
            "AWS_SECRET_ACCESS_KEY": cluster_value("STORE_SECRET_KEY")}
    secrets = [SOURCE_SECRET] + ([STORE_SECRET] if with_store else [])
    for secret in secrets:
        apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": name},
               "stringData": keys})
    if not with_store:
        kubectl("-n", name, "delete", "secret", STORE_SECRET, "--ignore-not-found")


def model_deployment(ns: str, name: str, model: dict) -> dict:
    return {"apiVersion": "serving.tractor.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"model": model, "optimize": {"precision": "f32"}, "serving": {"replicas": 1}}}


def wait_ready(ns: str, name: str) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        md = kubectl_json("-n", ns, "get", "mdep", name)
        status = md.get("status", {})
        if status.get("phase") == "Failed":
            raise RuntimeError(f"mdep/{name} in {ns} failed: {json.dumps(status)}")
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"]
        if ready:
            return md
        time.sleep(1)
    raise RuntimeError(f"mdep/{name} in {ns} not Ready after {READY_TIMEOUT:.0f} s")


class PodWatch:
    """`kubectl get pods --watch` of one model, stamping when each pod is first seen and first seen Ready."""

    def __init__(self, ns: str, model: str):
        self.seen: Dict[str, float] = {}
        self.ready: Dict[str, float] = {}
        self.ips: Dict[str, str] = {}
        self.changed = threading.Condition()
        self.process = subprocess.Popen(
            [KUBECTL, f"--kubeconfig={KUBECONFIG}", "-n", ns, "get", "pods", "-l", f"{MODEL_LABEL}={model}",
             "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        decoder = json.JSONDecoder()
        buffer = ""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            at = time.monotonic()
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                continue
            buffer = buffer.lstrip()[end:]
            pod = event.get("object", {})
            name = pod.get("metadata", {}).get("name", "")
            if event.get("type") == "DELETED" or pod.get("metadata", {}).get("deletionTimestamp"):
                continue
            with self.changed:
                self.seen.setdefault(name, at)
                conditions = pod.get("status", {}).get("conditions", [])
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    self.ready.setdefault(name, at)
                    self.ips[name] = pod.get("status", {}).get("podIP", "")
                self.changed.notify_all()

    def wait_new_ready(self, before: set, timeout: float) -> str:
        """The first pod not in `before` that became Ready."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                fresh = [name for name in self.ready if name not in before]
                if fresh:
                    return fresh[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no new Ready pod after {timeout:.0f} s (seen: {sorted(self.seen)})")
                self.changed.wait(left)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def server_rss_mib(ip: str) -> Optional[float]:
    """The serving container's own resident memory (its /metrics on the pod address, reachable from the host)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        found = re.match(r"process_resident_memory_bytes(\{[^}]*\})? (\S+)$", line)
        if found:
            return float(found.group(2)) / MIB
    return None


def at_zero(ns: str, name: str, timeout: float = READY_TIMEOUT) -> None:
    """Waits until the model is at zero: phase ScaledToZero and no serving pod left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = kubectl_json("-n", ns, "get", "mdep", name)
        pods = kubectl_json("-n", ns, "get", "pods", "-l", f"{MODEL_LABEL}={name}")["items"]
        if md.get("status", {}).get("phase") == "ScaledToZero" and not pods:
            return
        time.sleep(1)
    raise RuntimeError(f"mdep/{name} in {ns} not at zero after {timeout:.0f} s")


def from_zero(ns: str, name: str, runs: int) -> dict:
    """First request from zero -> its answer, through the model's Service (the activator holds it, wakes the
    model and forwards it), `runs` times: each waits for the model to go to zero again first."""
    md = wait_ready(ns, name)
    body = process.infer_body(md["status"]["model"]["inputs"])
    ip = kubectl_json("-n", ns, "get", "service", name)["spec"]["clusterIP"]
    took: List[float] = []
    for run in range(runs):
        at_zero(ns, name)
        request = urllib.request.Request(f"http://{ip}:8080/v2/models/{name}/infer", data=body, method="POST",
                                         headers={"content-type": "application/json"})
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{ns}/{name}: answered {response.status}")
        took.append(time.monotonic() - started)
        print(f"  {ns}/{name} from zero, run {run + 1}: answered in {took[-1]:.2f} s", flush=True)
    return {"namespace": ns, "model": name, "runs": len(took), "answer_s": took,
            "median_s": statistics.median(took), "min_s": min(took), "max_s": max(took)}


def measure(ns: str, name: str, runs: int) -> dict:
    md = wait_ready(ns, name)
    delivery = md["status"].get("model", {}).get("delivery", {}).get("mode", "?")
    watch = PodWatch(ns, name)
    starts: List[float] = []
    rss: List[float] = []
    try:
        for run in range(runs):
            pods = kubectl_json("-n", ns, "get", "pods", "-l", f"{MODEL_LABEL}={name}")["items"]
            current = {pod["metadata"]["name"] for pod in pods}
            with watch.changed:
                before = set(watch.seen) | current
            kubectl("-n", ns, "delete", "pod", *sorted(current), "--wait=false")
            fresh = watch.wait_new_ready(before, READY_TIMEOUT)
            with watch.changed:
                took = watch.ready[fresh] - watch.seen[fresh]
                ip = watch.ips[fresh]
            starts.append(took)
            memory = server_rss_mib(ip)
            if memory is not None:
                rss.append(memory)
            print(f"  {ns}/{name} run {run + 1}: pod {fresh} Ready {took:.2f} s after created"
                  f"{f', RSS {memory:.1f} MiB' if memory is not None else ''}", flush=True)
    finally:
        watch.close()
    return {"namespace": ns, "model": name, "delivery": delivery, "runs": len(starts),
            "ready_s": starts, "median_s": statistics.median(starts), "min_s": min(starts), "max_s": max(starts),
            "rss_mib": statistics.median(rss) if rss else None,
            "artifact_bytes": md["status"].get("model", {}).get("sizeBytes")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the large model and pods.md")
    parser.add_argument("--runs", type=int, default=5, help="pod starts per model and delivery")
    parser.add_argument("--json", type=Path, help="also write machine-readable results here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    host, port, bucket = cluster_value("HOST_IP"), cluster_value("STORE_PORT"), cluster_value("STORE_BUCKET")
    large = process.ensure_large_model(args.out)
    large_sha = process.sha256_of(large)
    s3_call(host, port, "PUT", f"{bucket}/models/{large.name}", large)
    small = REPO / "tests/fixtures/digits_mlp.onnx"
    small_sha = process.sha256_of(small)
    clear_cache(host, port, bucket)

    rows = []
    for ns, with_store in [("coldstart-store", True), ("coldstart-rederive", False)]:
        namespace(ns, with_store)
        apply(json.loads(kubectl("-n", ns, "create", "configmap", "small-model",
                                 f"--from-file=digits_mlp.onnx={small}", "--dry-run=client", "-o", "json")))
        apply(model_deployment(ns, "small", {"uri": "configmap://small-model/digits_mlp.onnx", "sha256": small_sha}))
        apply(model_deployment(ns, "large", {
            "uri": f"s3://{bucket}/models/{large.name}", "sha256": large_sha,
            "s3": {"endpoint": f"http://{host}:{port}", "region": "us-east-1", "secretRef": {"name": SOURCE_SECRET}}}))
        for name in ["small", "large"]:
            row = measure(ns, name, args.runs)
            row["model"] = name
            row["with_store"] = with_store
            rows.append(row)

    # Scale to zero: the same two models, idle after ZERO_IDLE_AFTER, with the store.
    zero_ns = "coldstart-zero"
    namespace(zero_ns, True)
    apply(json.loads(kubectl("-n", zero_ns, "create", "configmap", "small-model",
                             f"--from-file=digits_mlp.onnx={small}", "--dry-run=client", "-o", "json")))
    sources = {
        "small": {"uri": "configmap://small-model/digits_mlp.onnx", "sha256": small_sha},
        "large": {"uri": f"s3://{bucket}/models/{large.name}", "sha256": large_sha,
                  "s3": {"endpoint": f"http://{host}:{port}", "region": "us-east-1",
                         "secretRef": {"name": SOURCE_SECRET}}},
    }
    for name, source in sources.items():
        md = model_deployment(zero_ns, name, source)
        del md["spec"]["serving"]
        md["spec"]["autoscaling"] = {
            "minReplicas": 0, "maxReplicas": 1, "interval": "5s", "scaleToZero": {"idleAfter": ZERO_IDLE_AFTER},
            "metrics": [{"type": "Throughput", "throughput": {"targetPerReplica": 100}}]}
        apply(md)
    zero_rows = [from_zero(zero_ns, name, args.runs) for name in sources]

    lines = ["## Pod created → Ready on the real node", "",
             f"One replica, deleted {args.runs} times; each replacement timed from the watch event that first "
             "shows it to the one that first shows it Ready. Precision f32. RSS: the serving container's "
             "`process_resident_memory_bytes` once Ready.", "",
             "| model | delivery | Ready s (median) | min | max | runs | server RSS MiB | artifact MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        rss = f"{row['rss_mib']:.1f}" if row["rss_mib"] is not None else "n/a"
        size = f"{row['artifact_bytes'] / MIB:.1f}" if row["artifact_bytes"] else "n/a"
        lines.append(f"| {row['model']} | {row['delivery']} | {row['median_s']:.2f} | {row['min_s']:.2f} | "
                     f"{row['max_s']:.2f} | {row['runs']} | {rss} | {size} |")
    by = {(row["model"], row["with_store"]): row for row in rows}
    checks = [
        (f"small model pod Ready ≤ {GOAL_SMALL_POD_S:.0f} s (store)", by[("small", True)]["median_s"],
         GOAL_SMALL_POD_S),
        (f"large model pod Ready ≤ {GOAL_LARGE_POD_STORE_S:.0f} s with the store", by[("large", True)]["median_s"],
         GOAL_LARGE_POD_STORE_S),
    ]
    lines += ["", "## First request from zero → its answer", "",
              f"`minReplicas: 0`, `scaleToZero.idleAfter: {ZERO_IDLE_AFTER}`, with the store; one REST request "
              "through the model's ClusterIP once the model is at zero (no pod, the Service on the activator), "
              f"timed to its answer, {args.runs} times.", "",
              "| model | answered s (median) | min | max | runs |", "|---|---:|---:|---:|---:|"]
    for row in zero_rows:
        lines.append(f"| {row['model']} | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['max_s']:.2f} | "
                     f"{row['runs']} |")
    checks.append((f"small model's first request from zero answered ≤ {GOAL_SMALL_FROM_ZERO_S:.0f} s",
                   zero_rows[0]["median_s"], GOAL_SMALL_FROM_ZERO_S))
    lines += ["", "Goals (reported, not asserted):", ""]
    for what, got, goal in checks:
        lines.append(f"- {'✓' if got <= goal else '✗'} {what}: {got:.2f} s")
    for model in ["small", "large"]:
        store, rederive = by[(model, True)]["median_s"], by[(model, False)]["median_s"]
        lines.append(f"- {model} model: the store's pod is Ready {rederive / store:.1f}× sooner than re-derivation's "
                     f"({store:.2f} s against {rederive:.2f} s)")
    report = "\n".join(lines) + "\n"
    (args.out / "pods.md").write_text(report)
    if args.json:
        args.json.write_text(json.dumps({"pods": rows, "from_zero": zero_rows}, indent=2))
    print(report)


if __name__ == "__main__":
    main()
