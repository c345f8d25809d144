#!/usr/bin/env python3
# KServe's Python ModelServer serving one ONNX model with onnxruntime: the baseline that
# scripts/bench_coldstart_process.py times tractor's cold start against. Written the way KServe's own
# runtimes are (a kserve.Model whose load() builds the session before ModelServer.start()), so its start costs
# what a custom KServe predictor's start costs.
#
#   python scripts/kserve_onnx_server.py --model_path M.onnx --model_name m --http_port 8080 --grpc_port 8081
#
# The flags are KServe's own (its parser is the parent of this one), so nothing here reads the cluster: no
# storage initializer, no predictor host, no Kubernetes client.
import time

# Taken before the heavy imports: scripts/bench_coldstart_process.py splits KServe's start into interpreter +
# imports, model load and server start from these (perf_counter is CLOCK_MONOTONIC, shared across processes).
STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from typing import Dict, Optional  # noqa: E402

import kserve  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
from kserve.utils.utils import from_np_dtype  # noqa: E402

IMPORTED = time.perf_counter()


class OnnxModel(kserve.Model):
    """One onnxruntime session; V2 requests in, every model output out."""

    def __init__(self, name: str, model_path: str, threads: int) -> None:
        super().__init__(name)
        self.model_path = model_path
        self.threads = threads
        self.session: Optional[onnxruntime.InferenceSession] = None

    def load(self) -> bool:
        options = onnxruntime.SessionOptions()
        if self.threads > 0:
            options.intra_op_num_threads = self.threads
        self.session = onnxruntime.InferenceSession(
            self.model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.ready = True
        return self.ready

    async def predict(
        self,
        payload: kserve.InferRequest,
        headers: Optional[Dict[str, str]] = None,
        response_headers: Optional[Dict[str, str]] = None,
    ) -> kserve.InferResponse:
        assert self.session is not None, "predict before load"
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        names = [output.name for output in self.session.get_outputs()]
        results = self.session.run(names, feeds)
        outputs = []
        for name, result in zip(names, results):
            array = np.asarray(result)
            output = kserve.InferOutput(
                name=name, shape=list(array.shape), datatype=from_np_dtype(array.dtype)
            )
            output.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        # The V2 response must carry an id; a request may not (KServe's own runtimes make one up too).
        response_id = payload.id or str(uuid.uuid4())
        return kserve.InferResponse(
            model_name=self.name, infer_outputs=outputs, response_id=response_id
        )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True, help="The .onnx file to serve.")
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime intra-op threads; 0: its default (all cores)."
    )
    args, _ = parser.parse_known_args()
    model = OnnxModel(args.model_name, args.model_path, args.threads)
    model.load()
    marks = {"started": STARTED, "imported": IMPORTED, "loaded": time.perf_counter()}
    print("BENCH-MARKS " + json.dumps(marks), file=sys.stderr, flush=True)
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start([model])


if __name__ == "__main__":
    main()
