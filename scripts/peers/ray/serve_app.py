"""make bench, Ray Serve peer: one ONNX file served by onnxruntime from a Ray Serve deployment, started the way Ray
Serve's documentation runs an application on one machine (a local Ray instance, `serve.start` with the HTTP
options, `serve.run` of a bound deployment) with the resources said explicitly: one CPU for Ray, one replica that
asks for it, an explicit object store (OBJECT_STORE_MIB), no dashboard, per-request access logs off (tractor writes
none), one intra-op thread in onnxruntime.

    python serve_app.py --model M.onnx --port P [--threads 1]

Ray Serve has no inference protocol of its own, so the deployment takes the same Open Inference Protocol V2 JSON
body as the V2 servers (`{"inputs": [{"name", "shape", "datatype", "data"}]}`) and answers in V2's shape. Runs until
SIGTERM, then shuts Serve and Ray down so no Ray process outlives it.
"""
import argparse
import signal
import sys
import threading

import numpy as np
import onnxruntime
import ray
from ray import serve
from starlette.requests import Request

# Ray's smallest allowed object store is 75 MiB; the deployment passes no large objects between actors.
OBJECT_STORE_MIB = 100
ROUTE_PREFIX = "/v2/models/m"
DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
class OnnxDeployment:
    """One onnxruntime session; V2 JSON in, V2 JSON out, on any path under the route prefix."""

    def __init__(self, model_path: str, threads: int) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.output_names = [output.name for output in self.session.get_outputs()]

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        feeds = {
            tensor["name"]: np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            for tensor in body["inputs"]
        }
        results = self.session.run(self.output_names, feeds)
        outputs = [
            {"name": name, "shape": list(result.shape), "datatype": DATATYPES[str(result.dtype)],
             "data": result.ravel().tolist()}
            for name, result in zip(self.output_names, results)
        ]
        return {"model_name": "m", "id": body.get("id", ""), "outputs": outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the .onnx file")
    parser.add_argument("--port", type=int, required=True, help="Serve's HTTP port (127.0.0.1)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--temp-dir", default=None, help="Ray's session folder (default Ray's own)")
    args = parser.parse_args()

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    ray.init(num_cpus=1, object_store_memory=OBJECT_STORE_MIB * 1024 * 1024, include_dashboard=False,
             _temp_dir=args.temp_dir)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port},
                logging_config={"enable_access_log": False})
    serve.run(OnnxDeployment.bind(args.model, args.threads), name="bench", route_prefix=ROUTE_PREFIX,
              logging_config={"enable_access_log": False})
    print("serve_app: application running", file=sys.stderr, flush=True)
    stopping.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
