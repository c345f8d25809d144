"""make bench, servers: how each server under test is started, what it is sent and how its answers are read.

Five servers, each serving an ONNX file on one pinned core with one inference thread:
- tractor: `tractor serve --threads 1` (the release binary; the environment a pod gives it);
- kserve: KServe's Python ModelServer with an onnxruntime `kserve.Model` (scripts/kserve_onnx_server.py, the one
  `make bench-coldstart` uses), one uvicorn worker;
- mlserver: Seldon's MLServer with a custom onnxruntime runtime (scripts/peers/mlserver/), one parallel worker;
- bentoml: a `@bentoml.service` (scripts/peers/bentoml/), one worker;
- ray: a Ray Serve deployment (scripts/peers/ray/), one replica, Ray limited to one CPU.
`CONFIGURATION` says the same per server in words for the report. The V2 servers (and Ray, whose handler we write)
get the same Open Inference Protocol V2 JSON body; BentoML gets its native JSON (`{"x": [[...]]}`).
"""
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from bench_coldstart_process import server_env
from bench_peers_models import BenchModel

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "scripts/peers"
KSERVE_SERVER = REPO / "scripts/kserve_onnx_server.py"
GRPC_PROTO = REPO / "crates/tractor-serve/proto/grpc_predict_v2.proto"
MODEL_NAME = "m"
V2_INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
JSON_HEADERS = {"Content-Type": "application/json"}
INFERENCE_THREADS = 1
BINARY_HEADER = "Inference-Header-Content-Length"


@dataclass
class Ports:
    http: int
    grpc: int
    extra: int  # MLServer's metrics port


@dataclass
class Launch:
    """A server process to start: the command (pinned by the caller), its environment and folder."""

    argv: List[str]
    env: Dict[str, str]
    cwd: Path
    cleanup: List[Path] = field(default_factory=list)  # folders to remove after it stopped


@dataclass
class Installed:
    """Where the servers are: tractor's binary and the folder holding one venv per peer (`<name>-venv`)."""

    tractor: Path
    venvs: Path


@dataclass
class ServerSpec:
    name: str
    title: str
    package: str  # the PyPI distribution whose version the report names ("" for tractor)
    grpc: bool
    body_format: str  # "v2" or "bentoml"
    infer_path: str
    launch: Callable[["ServerSpec", Installed, BenchModel, Ports, Path], Launch]

    def python(self, venvs: Path) -> Path:
        return venvs / f"{self.name}-venv" / "bin" / "python"


def launch_tractor(spec: ServerSpec, installed: Installed, model: BenchModel, ports: Ports,
                   workdir: Path) -> Launch:
    argv = [str(installed.tractor), "serve", "--model", str(model.path), "--name", MODEL_NAME,
            "--http-addr", f"127.0.0.1:{ports.http}", "--grpc-addr", f"127.0.0.1:{ports.grpc}",
            "--threads", str(INFERENCE_THREADS)]
    return Launch(argv=argv, env=server_env("tractor"), cwd=workdir)


def launch_kserve(spec: ServerSpec, installed: Installed, model: BenchModel, ports: Ports,
                  workdir: Path) -> Launch:
    argv = [str(spec.python(installed.venvs)), str(KSERVE_SERVER), "--model_path", str(model.path),
            "--model_name", MODEL_NAME, "--http_port", str(ports.http), "--grpc_port", str(ports.grpc),
            "--threads", str(INFERENCE_THREADS), "--workers", "1", "--enable_latency_logging", "false",
            "--log_config_file", str(PEERS / "kserve/logging.json")]
    return Launch(argv=argv, env=server_env(), cwd=workdir)


def launch_mlserver(spec: ServerSpec, installed: Installed, model: BenchModel, ports: Ports,
                    workdir: Path) -> Launch:
    repository = workdir / "mlserver"
    (repository / MODEL_NAME).mkdir(parents=True, exist_ok=True)
    settings = {"debug": False, "host": "127.0.0.1", "http_port": ports.http, "grpc_port": ports.grpc,
                "metrics_port": ports.extra, "parallel_workers": 1, "metrics_dir": str(repository / ".metrics")}
    (repository / "settings.json").write_text(json.dumps(settings, indent=2))
    model_settings = {"name": MODEL_NAME, "implementation": "onnx_runtime.OnnxRuntime",
                      "parameters": {"uri": str(model.path), "extra": {"threads": INFERENCE_THREADS}}}
    (repository / MODEL_NAME / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    argv = [str(spec.python(installed.venvs).parent / "mlserver"), "start", str(repository)]
    env = {**server_env(), "PYTHONPATH": str(PEERS / "mlserver")}
    return Launch(argv=argv, env=env, cwd=repository)


def launch_bentoml(spec: ServerSpec, installed: Installed, model: BenchModel, ports: Ports,
                   workdir: Path) -> Launch:
    argv = [str(spec.python(installed.venvs).parent / "bentoml"), "serve", "service:OnnxService",
            "--working-dir", str(PEERS / "bentoml"), "--host", "127.0.0.1", "--port", str(ports.http)]
    env = {**server_env(), "BENTOML_HOME": str(workdir / "bentoml-home"), "BENTOML_DO_NOT_TRACK": "true",
           "BENCH_ONNX_MODEL": str(model.path), "BENCH_ORT_THREADS": str(INFERENCE_THREADS)}
    return Launch(argv=argv, env=env, cwd=workdir)


def launch_ray(spec: ServerSpec, installed: Installed, model: BenchModel, ports: Ports,
               workdir: Path) -> Launch:
    # Ray puts unix sockets under its session folder, whose path must stay short (107 bytes).
    temp_dir = Path(f"/tmp/tractor-bench-ray-{ports.http}")
    argv = [str(spec.python(installed.venvs)), str(PEERS / "ray/serve_app.py"), "--model", str(model.path),
            "--port", str(ports.http), "--threads", str(INFERENCE_THREADS), "--temp-dir", str(temp_dir)]
    env = {**server_env(), "RAY_USAGE_STATS_ENABLED": "0"}
    return Launch(argv=argv, env=env, cwd=workdir, cleanup=[temp_dir])


SERVERS: Dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        ServerSpec("tractor", "tractor", "", True, "v2", V2_INFER_PATH, launch_tractor),
        ServerSpec("kserve", "KServe", "kserve", True, "v2", V2_INFER_PATH, launch_kserve),
        ServerSpec("mlserver", "MLServer", "mlserver", True, "v2", V2_INFER_PATH, launch_mlserver),
        ServerSpec("bentoml", "BentoML", "bentoml", False, "bentoml", "/predict", launch_bentoml),
        ServerSpec("ray", "Ray Serve", "ray", False, "v2", V2_INFER_PATH, launch_ray),
    ]
}

# What the report says of each server's configuration: processes, threads, logging, protocol.
CONFIGURATION = {
    "tractor": "`tractor serve --threads 1` on the ONNX file (one inference thread, dynamic batching as shipped: up "
               "to 32 rows, no added delay); tokio sizes itself to the one pinned core; no per-request log line; "
               "the pod's environment (`MALLOC_MMAP_THRESHOLD_`). REST JSON and binary, gRPC.",
    "kserve": "`scripts/kserve_onnx_server.py`: a `kserve.Model` with an onnxruntime session (1 intra-op thread) "
              "under `kserve.ModelServer`, 1 uvicorn worker (KServe's default), uvloop, gRPC on with its default "
              "thread pool; per-request logs off (`--enable_latency_logging false`, uvicorn access and "
              "`kserve.trace` at WARNING through `scripts/peers/kserve/logging.json`). REST V2 JSON, gRPC.",
    "mlserver": "`mlserver start` with a custom `MLModel` runtime (`scripts/peers/mlserver/onnx_runtime.py`, "
                "onnxruntime with 1 intra-op thread); `parallel_workers: 1` (Seldon's advice: one per core; "
                "inference runs in that worker process behind the front process), `debug: false` (no access "
                "log), adaptive batching off (its default). REST V2 JSON, gRPC.",
    "bentoml": "`bentoml serve` (production mode) of a `@bentoml.service` (`scripts/peers/bentoml/service.py`): "
               "`workers=1`, `threads=1`, `resources={\"cpu\": \"1\"}`, onnxruntime with 1 intra-op thread, "
               "access log off. REST with BentoML's own JSON (`{\"x\": [[...]]}`); no gRPC since BentoML 1.2.",
    "ray": "`scripts/peers/ray/serve_app.py`: local Ray with `num_cpus=1`, a 100 MiB object store, no dashboard; "
           "one Serve replica (`num_cpus: 1`, default `max_ongoing_requests`) behind Serve's HTTP proxy, "
           "onnxruntime with 1 intra-op thread, access log off. REST: the same V2 JSON body, parsed by our "
           "handler; Ray Serve's gRPC needs user-compiled protos, not benched.",
}


def v2_json_body(model: BenchModel, row: np.ndarray) -> bytes:
    tensor = {"name": model.input_name, "shape": [1, *model.row_shape], "datatype": "FP32",
              "data": row.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def bentoml_body(model: BenchModel, row: np.ndarray) -> bytes:
    return json.dumps({"x": row.reshape([1, *model.row_shape]).tolist()}).encode()


def v2_binary_body(model: BenchModel, row: np.ndarray, output_names: List[str]) -> tuple:
    """The binary tensor extension: a JSON header, then the raw little-endian f32 input; outputs asked binary
    too. Returns (body, headers)."""
    raw = row.astype("<f4").tobytes()
    header = {"inputs": [{"name": model.input_name, "shape": [1, *model.row_shape], "datatype": "FP32",
                          "parameters": {"binary_data_size": len(raw)}}],
              "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in output_names]}
    header_bytes = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(header_bytes))}
    return header_bytes + raw, headers


def grpc_json_body(model: BenchModel, row: np.ndarray) -> bytes:
    """A `ModelInferRequest` as ghz's JSON data: typed contents, which every V2 gRPC server reads."""
    tensor = {"name": model.input_name, "datatype": "FP32", "shape": [1, *model.row_shape],
              "contents": {"fp32_contents": row.ravel().tolist()}}
    return json.dumps({"model_name": MODEL_NAME, "inputs": [tensor]}).encode()


def request_body(spec: ServerSpec, model: BenchModel, row: np.ndarray) -> bytes:
    return bentoml_body(model, row) if spec.body_format == "bentoml" else v2_json_body(model, row)


def parse_answer(spec: ServerSpec, body: bytes) -> Dict[str, np.ndarray]:
    answer = json.loads(body)
    if spec.body_format == "bentoml":
        return {name: np.asarray(value, dtype=np.float64) for name, value in answer.items()}
    return {tensor["name"]: np.asarray(tensor["data"], dtype=np.float64) for tensor in answer["outputs"]}


def parse_binary_answer(body: bytes, header_length: int) -> Dict[str, np.ndarray]:
    header = json.loads(body[:header_length])
    offset = header_length
    outputs = {}
    dtypes = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}
    for tensor in header["outputs"]:
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is None:
            outputs[tensor["name"]] = np.asarray(tensor["data"], dtype=np.float64)
            continue
        chunk = body[offset:offset + size]
        offset += size
        outputs[tensor["name"]] = np.frombuffer(chunk, dtype=dtypes[tensor["datatype"]]).astype(np.float64)
    return outputs


def package_versions(python: Path, packages: List[str]) -> Dict[str, str]:
    """Versions of the named distributions inside a venv (and its Python), asked from that venv."""
    code = ("import importlib.metadata as m, json, platform, sys; "
            "print(json.dumps({**{p: m.version(p) for p in sys.argv[1:]}, 'python': platform.python_version()}))")
    try:
        done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return {package: "unknown" for package in packages}
