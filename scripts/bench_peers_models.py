"""make bench, models: the four ONNX models every server is benched on, and the input rows sent to them.

- `mlp`: the digits MLP fixture (tests/fixtures/digits_mlp.onnx, 64 -> 10, scikit-learn via skl2onnx): tiny, so
  serving overhead is all there is to measure.
- `forest`: a 300-tree random forest on the same digits (scikit-learn's bundled data set, skl2onnx, no ZipMap):
  the tree walk is cheap per row, so overhead still dominates.
- `dense`: a ~25 M parameter f32 MLP (1024 -> 4096 -> 4096 -> 1024 -> 16, He-scaled random weights): 100 MB of
  weights read per batch-1 request, compute-bound.
- `cnn`: a small image CNN of realistic size (3x32x32 in, three 3x3 conv + ReLU + 2x2 max-pool blocks of 64, 128
  and 256 channels, then 4096 -> 256 -> 10; ~1.4 M parameters, ~80 MFLOP a row): compute-bound, convolutions.

Generated once into a cache folder (seeded, so every machine benches the same weights) with a JSON sidecar naming
the input, the row shape and a few real rows; `ensure_models(folder)` returns them. Runs in the driver's venv
(scripts/bench-peers-requirements.txt).
"""
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
MLP_FIXTURE = REPO / "tests/fixtures/digits_mlp.onnx"
MLP_ROWS = REPO / "tests/fixtures/digits_mlp_test.json"
SEED = 20261221
# Bump when a generator changes, so cached models made the old way are regenerated.
GENERATOR_REVISION = 1
SAMPLE_ROWS = 4
DENSE_WIDTHS = [1024, 4096, 4096, 1024, 16]
CNN_CHANNELS = [3, 64, 128, 256]
CNN_SIDE = 32
CNN_HIDDEN = 256
CNN_CLASSES = 10
FOREST_TREES = 300
FOREST_DEPTH = 12
OPSET = 17


@dataclass
class BenchModel:
    """One model as the bench serves it: the file, its one FP32 input and rows to send."""

    name: str
    title: str
    path: Path
    input_name: str
    row_shape: List[int]
    parameters: int
    bound: str  # "overhead" or "compute": which goal of the issue applies
    rows: np.ndarray  # SAMPLE_ROWS rows, float32, shape [SAMPLE_ROWS, *row_shape]

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size


def he_weight(rng: np.random.Generator, shape: tuple, fan_in: int) -> np.ndarray:
    """Scaled like a trained layer's (He), so activations stay finite through the stack."""
    return (rng.standard_normal(shape, dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def save_model(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tractor-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    partial = path.with_suffix(".partial")
    onnx.save(model, str(partial))
    partial.rename(path)


def make_dense(path: Path, rng: np.random.Generator) -> np.ndarray:
    nodes, weights = [], []
    previous = "X"
    layers = list(zip(DENSE_WIDTHS, DENSE_WIDTHS[1:]))
    for index, (fan_in, fan_out) in enumerate(layers):
        weights.append(numpy_helper.from_array(he_weight(rng, (fan_in, fan_out), fan_in), f"w{index}"))
        weights.append(numpy_helper.from_array(np.full(fan_out, 0.01, np.float32), f"b{index}"))
        nodes.append(helper.make_node("Gemm", [previous, f"w{index}", f"b{index}"], [f"h{index}"]))
        previous = f"h{index}"
        if index < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [previous], [f"r{index}"]))
            previous = f"r{index}"
    nodes.append(helper.make_node("Softmax", [previous], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "bench_dense",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", DENSE_WIDTHS[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", DENSE_WIDTHS[-1]])],
        weights)
    save_model(graph, path)
    return rng.standard_normal((SAMPLE_ROWS, DENSE_WIDTHS[0]), dtype=np.float32)


def make_cnn(path: Path, rng: np.random.Generator) -> np.ndarray:
    nodes, weights = [], []
    previous = "image"
    for index, (channels_in, channels_out) in enumerate(zip(CNN_CHANNELS, CNN_CHANNELS[1:])):
        kernel = he_weight(rng, (channels_out, channels_in, 3, 3), channels_in * 9)
        weights.append(numpy_helper.from_array(kernel, f"k{index}"))
        weights.append(numpy_helper.from_array(np.full(channels_out, 0.01, np.float32), f"kb{index}"))
        nodes.append(helper.make_node("Conv", [previous, f"k{index}", f"kb{index}"], [f"c{index}"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"a{index}"]))
        nodes.append(helper.make_node("MaxPool", [f"a{index}"], [f"p{index}"], kernel_shape=[2, 2], strides=[2, 2]))
        previous = f"p{index}"
    side = CNN_SIDE // 2 ** (len(CNN_CHANNELS) - 1)
    flat = CNN_CHANNELS[-1] * side * side
    nodes.append(helper.make_node("Flatten", [previous], ["flat"], axis=1))
    for index, (fan_in, fan_out) in enumerate([(flat, CNN_HIDDEN), (CNN_HIDDEN, CNN_CLASSES)]):
        weights.append(numpy_helper.from_array(he_weight(rng, (fan_in, fan_out), fan_in), f"w{index}"))
        weights.append(numpy_helper.from_array(np.full(fan_out, 0.01, np.float32), f"b{index}"))
    nodes.append(helper.make_node("Gemm", ["flat", "w0", "b0"], ["h0"]))
    nodes.append(helper.make_node("Relu", ["h0"], ["r0"]))
    nodes.append(helper.make_node("Gemm", ["r0", "w1", "b1"], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "bench_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", CNN_CHANNELS[0], CNN_SIDE, CNN_SIDE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CNN_CLASSES])],
        weights)
    save_model(graph, path)
    return rng.random((SAMPLE_ROWS, CNN_CHANNELS[0], CNN_SIDE, CNN_SIDE), dtype=np.float32)


def make_forest(path: Path, rng: np.random.Generator) -> np.ndarray:
    # Imported here: only this generator needs scikit-learn, and it is the slow import.
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from skl2onnx import to_onnx

    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32)
    order = rng.permutation(len(features))
    train, test = order[:1400], order[1400:]
    forest = RandomForestClassifier(n_estimators=FOREST_TREES, max_depth=FOREST_DEPTH, random_state=SEED, n_jobs=1)
    forest.fit(features[train], digits.target[train])
    model = to_onnx(forest, features[:1], options={id(forest): {"zipmap": False}},
                    target_opset={"": OPSET, "ai.onnx.ml": 3})
    partial = path.with_suffix(".partial")
    onnx.save(model, str(partial))
    partial.rename(path)
    return features[test[:SAMPLE_ROWS]]


def copy_mlp(path: Path, rng: np.random.Generator) -> np.ndarray:
    shutil.copyfile(MLP_FIXTURE, path)
    fixture = json.loads(MLP_ROWS.read_text())
    features = fixture["features"]
    return np.asarray(fixture["x"][: SAMPLE_ROWS * features], dtype=np.float32).reshape(SAMPLE_ROWS, features)


# name -> (title, generator, bound); the order is the report's.
GENERATORS: Dict[str, tuple] = {
    "mlp": ("digits MLP (fixture)", copy_mlp, "overhead"),
    "forest": (f"random forest, {FOREST_TREES} trees", make_forest, "overhead"),
    "dense": ("dense MLP, ~25 M parameters", make_dense, "compute"),
    "cnn": ("small CNN, 3x32x32", make_cnn, "compute"),
}


def count_parameters(path: Path) -> int:
    """Weights in initializers, or nodes plus leaf weights for a tree ensemble."""
    model = onnx.load(str(path))
    total = sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name in ("nodes_values", "class_weights", "target_weights"):
                total += len(attribute.floats)
    return total


def describe_input(path: Path) -> tuple:
    model = onnx.load(str(path), load_external_data=False)
    tensor = model.graph.input[0]
    dims = [dim.dim_value for dim in tensor.type.tensor_type.shape.dim[1:]]
    return tensor.name, dims


def ensure_model(folder: Path, name: str) -> BenchModel:
    title, generator, bound = GENERATORS[name]
    path = folder / f"{name}.onnx"
    sidecar = folder / f"{name}.json"
    stamp = {"revision": GENERATOR_REVISION, "seed": SEED}
    cached = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    if not (path.is_file() and cached.get("stamp") == stamp):
        generate: Callable[[Path, np.random.Generator], np.ndarray] = generator
        rows = generate(path, np.random.default_rng(SEED))
        input_name, row_shape = describe_input(path)
        cached = {"stamp": stamp, "input": input_name, "row_shape": row_shape,
                  "parameters": count_parameters(path), "rows": rows.ravel().tolist()}
        sidecar.write_text(json.dumps(cached))
    rows = np.asarray(cached["rows"], dtype=np.float32).reshape([SAMPLE_ROWS, *cached["row_shape"]])
    return BenchModel(name=name, title=title, path=path, input_name=cached["input"], row_shape=cached["row_shape"],
                      parameters=cached["parameters"], bound=bound, rows=rows)


def ensure_models(folder: Path, names: List[str]) -> List[BenchModel]:
    folder.mkdir(parents=True, exist_ok=True)
    return [ensure_model(folder, name) for name in names]


if __name__ == "__main__":
    import sys

    for bench_model in ensure_models(Path(sys.argv[1]), list(GENERATORS)):
        print(f"{bench_model.name:7} {bench_model.parameters:>11,} parameters  {bench_model.file_bytes:>12,} bytes  "
              f"input {bench_model.input_name}{bench_model.row_shape}")
