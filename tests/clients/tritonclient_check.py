#!/usr/bin/env python3
"""Drives a running `tractor serve` with NVIDIA's tritonclient: HTTP JSON, HTTP binary and gRPC.

Usage: tritonclient_check.py HTTP_HOST:PORT GRPC_HOST:PORT MODEL FIXTURE_NAME
Checks metadata, inference on the fixture's whole test split (shapes, label equal to the argmax of the
scores), output selection, id echo and error cases; exits non-zero on a failure. Prints one JSON line:
`{PROTOCOL}_argmax`, the argmax of every row in split order, which the Rust test compares with onnxruntime's
by the one rule all the serving tests share (`Split::argmax_agreement`).
"""
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

http_url, grpc_url, model, fixture = sys.argv[1:5]
split = np.load(f"{sys.argv[0].rsplit('/', 2)[0]}/fixtures/{fixture}_test.npz")
ref = np.load(f"{sys.argv[0].rsplit('/', 2)[0]}/fixtures/{fixture}_ref.npz")
x, y = split["x"], split["y"]
figures = {}


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def run(name, client, mod, binary):
    meta = client.get_model_metadata(model)
    inputs_meta = meta["inputs"] if isinstance(meta, dict) else [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in meta.inputs]
    check(inputs_meta[0]["datatype"] == "FP32", f"{name}: metadata datatype")
    check(list(inputs_meta[0]["shape"]) == [-1, x.shape[1]], f"{name}: metadata shape {inputs_meta[0]['shape']}")
    check(client.is_server_live() and client.is_server_ready() and client.is_model_ready(model), f"{name}: health")
    answered = []
    for start in range(0, len(y), 64):
        xb = x[start:start + 64]
        inp = mod.InferInput(inputs_meta[0]["name"], list(xb.shape), "FP32")
        if binary is None:
            inp.set_data_from_numpy(xb)
            outs = [mod.InferRequestedOutput("probabilities"), mod.InferRequestedOutput("label")]
        else:
            inp.set_data_from_numpy(xb, binary_data=binary)
            outs = [mod.InferRequestedOutput("probabilities", binary_data=binary), mod.InferRequestedOutput("label", binary_data=binary)]
        res = client.infer(model, [inp], outputs=outs, request_id=f"{name}-{start}")
        probs = res.as_numpy("probabilities")
        labels = res.as_numpy("label")
        check(probs.shape == (len(xb), ref["probabilities"].shape[1]), f"{name}: output shape {probs.shape}")
        check((labels == probs.argmax(axis=1)).all(), f"{name}: label vs argmax")
        resp = res.get_response()
        rid = resp["id"] if isinstance(resp, dict) else resp.id
        check(rid == f"{name}-{start}", f"{name}: id echo {rid}")
        answered.extend(int(a) for a in probs.argmax(axis=1))
    figures[f"{name}_argmax"] = answered
    # Output selection: only the label.
    inp = mod.InferInput(inputs_meta[0]["name"], [1, x.shape[1]], "FP32")
    inp.set_data_from_numpy(x[:1]) if binary is None else inp.set_data_from_numpy(x[:1], binary_data=binary)
    res = client.infer(model, [inp], outputs=[mod.InferRequestedOutput("label")])
    check(res.as_numpy("probabilities") is None and res.as_numpy("label") is not None, f"{name}: output selection")
    # Errors: unknown model, wrong shape.
    for bad_model, bad_x, want in [("nope", x[:1], ("404", "NOT_FOUND")), (model, np.zeros((1, x.shape[1] + 1), np.float32), ("400", "INVALID_ARGUMENT"))]:
        inp = mod.InferInput(inputs_meta[0]["name"], list(bad_x.shape), "FP32")
        inp.set_data_from_numpy(bad_x) if binary is None else inp.set_data_from_numpy(bad_x, binary_data=binary)
        try:
            client.infer(bad_model, [inp])
            check(False, f"{name}: {bad_model} with shape {bad_x.shape} should fail")
        except InferenceServerException as e:
            status = str(e.status())
            check(any(w in status for w in want), f"{name}: status {status} for {bad_model}, want {want}")


run("http_json", httpclient.InferenceServerClient(http_url), httpclient, False)
run("http_binary", httpclient.InferenceServerClient(http_url), httpclient, True)
run("grpc", grpcclient.InferenceServerClient(grpc_url), grpcclient, None)
print(json.dumps(figures))
