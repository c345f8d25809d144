"""make bench, MLServer peer: a custom MLServer runtime serving one ONNX file with onnxruntime, written the way
MLServer's documentation says to add a framework it has no runtime for (a `mlserver.MLModel` whose `load()` builds
the session and whose `predict()` decodes V2 inputs with `NumpyCodec` and encodes every output back).

scripts/bench_peers_servers.py writes a model repository (`settings.json`, `<model>/model-settings.json` naming
`onnx_runtime.OnnxRuntime`, the ONNX file in `parameters.uri` and the intra-op thread count in
`parameters.extra.threads`) and starts `mlserver start DIR` with this folder on PYTHONPATH.
"""
from typing import Optional

import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    """One onnxruntime session; V2 requests in, every model output out."""

    session: Optional[onnxruntime.InferenceSession] = None

    async def load(self) -> bool:
        parameters = self.settings.parameters
        options = onnxruntime.SessionOptions()
        threads = int((parameters.extra or {}).get("threads", 0))
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            parameters.uri, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.output_names = [output.name for output in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        assert self.session is not None, "predict before load"
        feeds = {tensor.name: NumpyCodec.decode_input(tensor) for tensor in payload.inputs}
        results = self.session.run(self.output_names, feeds)
        outputs = [NumpyCodec.encode_output(name, result) for name, result in zip(self.output_names, results)]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
