"""make bench, BentoML peer: one ONNX file served by onnxruntime from a `@bentoml.service`, the way BentoML's
documentation writes a service (a class that loads the model in `__init__`, one `@bentoml.api` method taking a
NumPy array) and configures it for a CPU budget of one core: one worker, one thread for the sync API, one intra-op
thread in onnxruntime, per-request access logs off (tractor writes none).

Started by scripts/bench_peers_servers.py as `bentoml serve service:OnnxService --port P` from this folder, with
the model in BENCH_ONNX_MODEL. BentoML has no V2 protocol: the request is its native JSON, `{"x": [[...]]}` (the
input as a nested list, batch first), and the answer maps each output name to a nested list.
"""
import os

import bentoml
import numpy as np
import onnxruntime

THREADS = int(os.environ.get("BENCH_ORT_THREADS", "1"))


@bentoml.service(
    workers=1,
    threads=1,
    resources={"cpu": "1"},
    logging={"access": {"enabled": False}},
)
class OnnxService:
    """One onnxruntime session behind one API, `POST /predict`."""

    def __init__(self) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = THREADS
        self.session = onnxruntime.InferenceSession(
            os.environ["BENCH_ONNX_MODEL"], sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]

    @bentoml.api
    def predict(self, x: np.ndarray) -> dict:
        results = self.session.run(self.output_names, {self.input_name: x.astype(np.float32, copy=False)})
        return {name: result.tolist() for name, result in zip(self.output_names, results)}
