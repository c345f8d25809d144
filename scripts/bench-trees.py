#!/usr/bin/env python3
"""make bench-optimize, tree rows: random forests of 100 and 300 trees (and a 100-tree gradient boosting
regressor) trained on breast_cancer, timed in onnxruntime at batch 1 and 256, then in tractor (the bench_trees
example, same rows), in the same run, each side with its default threads and with one.
Usage: bench-trees.py OUT_DIR TRACTOR_BENCH_CMD... Prints markdown rows; never gates on a time."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier

BATCHES = [1, 256]


def ort_median_us(path, x, threads):
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    times, start = [], time.perf_counter()
    while len(times) < 20 or (time.perf_counter() - start < 2 and len(times) < 20000):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e6


def tractor_median_us(cmd):
    res = subprocess.run(cmd + [str(b) for b in BATCHES], check=True, capture_output=True, text=True)
    return {json.loads(line)["batch"]: json.loads(line)["median_us"] for line in res.stdout.splitlines()}


def main():
    out = Path(sys.argv[1])
    cmd = sys.argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    models = {}
    for n in (100, 300):
        clf = RandomForestClassifier(n_estimators=n, random_state=0).fit(x, y)
        models[f"rf{n}_classifier"] = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}},
                                               target_opset={"": 13, "ai.onnx.ml": 3})
    gbr = GradientBoostingRegressor(n_estimators=100, random_state=0).fit(x, y.astype(np.float32))
    models["gb100_regressor"] = to_onnx(gbr, x[:1], target_opset={"": 13, "ai.onnx.ml": 3})
    cores = os.cpu_count()
    rows = ["", "Tree ensembles (breast_cancer, full-depth sklearn forests): median latency of one run, µs, same rows.",
            f"Default threads: onnxruntime {ort.__version__}'s own pool, tractor's budget (`serve --threads`, "
            f"default the available cores); this machine has {cores} cores. Each side also with 1 thread.",
            "Ratios above 1 mean tractor is faster.", "",
            "| model | batch | tractor (µs) | onnxruntime (µs) | ORT / tractor | tractor 1 thread (µs) "
            "| onnxruntime 1 thread (µs) | ORT / tractor, 1 thread |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, proto in models.items():
        path = out / f"{name}.onnx"
        path.write_bytes(proto.SerializeToString())
        rng = np.random.default_rng(0)
        pool = x[rng.integers(0, len(x), max(BATCHES))]
        pool.astype("<f4").tofile(out / f"{name}.x.f32")
        ours, ours_one = (tractor_median_us(cmd + threads + [str(path), str(x.shape[1])])
                          for threads in ([], ["--threads", "1"]))
        for b in BATCHES:
            xb = pool[:b]
            ort_all = ort_median_us(path, xb, 0)
            ort_one = ort_median_us(path, xb, 1)
            rows.append(f"| {name} | {b} | {ours[b]:.1f} | {ort_all:.1f} | {ort_all / ours[b]:.2f}× "
                        f"| {ours_one[b]:.1f} | {ort_one:.1f} | {ort_one / ours_one[b]:.2f}× |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
