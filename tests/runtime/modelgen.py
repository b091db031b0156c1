"""Small real models, written into model repositories by the tests that serve them."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch

DATATYPES = [
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]
CONFIG_TYPE = {dt: ("TYPE_STRING" if dt == "BYTES" else f"TYPE_{dt}") for dt in DATATYPES}


def sample(datatype: str, shape: tuple[int, ...] = (2, 3), seed: int = 0) -> np.ndarray:
    """Values that exercise each datatype's edges (extremes, negative zero, non-ASCII bytes)."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    if datatype == "BOOL":
        return (rng.integers(0, 2, count) == 1).reshape(shape)
    if datatype == "BYTES":
        pool = [b"hello", b"", "gr\u00fc\u00dfe \u2603".encode(), b"tab\tnewline\n", b"x" * 300]
        return np.array([pool[(i + seed) % len(pool)] for i in range(count)], dtype=object).reshape(shape)
    if datatype == "BF16":
        return rng.standard_normal(count).astype(np.float32).astype(ml_dtypes.bfloat16).reshape(shape)
    dtype = np.dtype(datatype.replace("FP", "float").replace("UINT", "uint").replace("INT", "int").lower())
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(max(info.min, -1000), min(info.max, 1000), count, endpoint=True).astype(dtype)
        values[0] = info.max
        if count > 1:
            values[1] = info.min
        return values.reshape(shape)
    return rng.standard_normal(count).astype(dtype).reshape(shape)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def python_echo(repo: Path, name: str, datatype: str, max_batch_size: int = 8) -> None:
    """A plain-Python model returning its input: the one format that can carry BYTES."""
    write(
        repo / name / "1" / "model.py",
        """
        class Model:
            def load(self):
                self.calls = 0

            def predict(self, inputs):
                self.calls += 1
                return {"OUTPUT0": inputs["INPUT0"]}
        """,
    )
    write(
        repo / name / "config.pbtxt",
        f"""
        max_batch_size: {max_batch_size}
        input [{{ name: "INPUT0" data_type: {CONFIG_TYPE[datatype]} dims: [-1] }}]
        output [{{ name: "OUTPUT0" data_type: {CONFIG_TYPE[datatype]} dims: [-1] }}]
        dynamic_batching {{ }}
        """,
    )


class _Echo(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchscript_echo(repo: Path, name: str, datatype: str) -> None:
    """A TorchScript identity over one datatype, named the Triton libtorch way."""
    (repo / name / "1").mkdir(parents=True)
    torch.jit.script(_Echo()).save(str(repo / name / "1" / "model.pt"))
    write(
        repo / name / "config.pbtxt",
        f"""
        platform: "pytorch_libtorch"
        max_batch_size: 8
        input [{{ name: "INPUT__0" data_type: {CONFIG_TYPE[datatype]} dims: [-1] }}]
        output [{{ name: "OUTPUT__0" data_type: {CONFIG_TYPE[datatype]} dims: [-1] }}]
        dynamic_batching {{ }}
        """,
    )


def mlp_module(seed: int = 0, sizes: tuple[int, ...] = (64, 32, 10)) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for index, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(a, b))
        if index < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval()


def torchscript_mlp(
    repo: Path, name: str = "mlp", max_batch_size: int = 8, delay_us: int = 0, seed: int = 0
) -> torch.nn.Module:
    """TorchScript MLP 64->32->10 with a Triton config; returns the eager module for reference."""
    module = mlp_module(seed)
    (repo / name / "1").mkdir(parents=True)
    torch.jit.trace(module, torch.zeros(1, 64)).save(str(repo / name / "1" / "model.pt"))
    write(
        repo / name / "config.pbtxt",
        f"""
        name: "{name}"
        platform: "pytorch_libtorch"
        max_batch_size: {max_batch_size}
        input [{{ name: "INPUT__0" data_type: TYPE_FP32 dims: [64] }}]
        output [{{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [10] }}]
        dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
        """,
    )
    return module


class TwoInTwoOut(torch.nn.Module):
    """forward(a, b) -> {"sum": a + b, "scaled": 2 * a * b}: two inputs, two named outputs."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": a + b, "scaled": 2.0 * a * b}


def export_two_io(repo: Path, name: str = "two_io") -> torch.nn.Module:
    """A torch.export program with a dynamic batch dim and no config: everything is introspected."""
    module = TwoInTwoOut()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        module, (torch.zeros(2, 4), torch.zeros(2, 4)), dynamic_shapes={"a": {0: batch}, "b": {0: batch}}
    )
    (repo / name / "1").mkdir(parents=True)
    torch.export.save(program, str(repo / name / "1" / "model.pt2"))
    return module


def python_slow(repo: Path, name: str = "slow", max_batch_size: int = 0) -> None:
    """Sleeps DELAY_MS milliseconds, touches <version>/started while it runs, returns DELAY_MS."""
    write(
        repo / name / "1" / "model.py",
        """
        import pathlib
        import time

        import numpy as np


        class Model:
            def __init__(self, model_dir):
                self.marker = pathlib.Path(model_dir) / "started"

            def predict(self, inputs):
                delay = inputs["DELAY_MS"]
                self.marker.write_text(str(int(delay.max())))
                time.sleep(float(delay.max()) / 1000.0)
                return {"OUT": np.array(delay, dtype=np.int32)}
        """,
    )
    dims = "[1]"
    write(
        repo / name / "config.pbtxt",
        f"""
        max_batch_size: {max_batch_size}
        input [{{ name: "DELAY_MS" data_type: TYPE_INT32 dims: {dims} }}]
        output [{{ name: "OUT" data_type: TYPE_INT32 dims: {dims} }}]
        {"dynamic_batching { }" if max_batch_size else ""}
        """,
    )


MODEL_PY = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, features):
        return torch.softmax(self.fc2(torch.relu(self.fc1(features))), dim=-1)
"""


def small_net(seed: int = 1) -> torch.nn.Module:
    namespace: dict[str, Any] = {}
    exec(MODEL_PY, namespace)
    torch.manual_seed(seed)
    net = namespace["Net"]()
    assert isinstance(net, torch.nn.Module)
    return net.eval()


MODEL_YAML = """
max_batch_size: 16
inputs:
  - {name: features, datatype: FP32, dims: [8]}
outputs:
  - {name: probabilities, datatype: FP32, dims: [3]}
"""


def state_dict_model(repo: Path, name: str = "sd_net") -> torch.nn.Module:
    """torch.save(state_dict) + model.py (one nn.Module class) + model.yaml."""
    net = small_net()
    (repo / name / "1").mkdir(parents=True)
    torch.save(net.state_dict(), repo / name / "1" / "weights.pth")
    write(repo / name / "1" / "model.py", MODEL_PY)
    write(repo / name / "model.yaml", MODEL_YAML)
    return net


def safetensors_model(repo: Path, name: str = "st_net") -> torch.nn.Module:
    """safetensors weights + model.py with build_model() + config.pbtxt."""
    from safetensors.torch import save_file

    net = small_net()
    (repo / name / "1").mkdir(parents=True)
    save_file(net.state_dict(), str(repo / name / "1" / "model.safetensors"))
    write(repo / name / "1" / "model.py", MODEL_PY + "\n\ndef build_model():\n    return Net()\n")
    write(
        repo / name / "config.pbtxt",
        """
        max_batch_size: 16
        input [{ name: "features" data_type: TYPE_FP32 dims: [8] }]
        output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [3] }]
        dynamic_batching { }
        """,
    )
    return net


def onnx_affine(path: Path, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """An ONNX graph y = x @ W + b with a symbolic batch dim; returns (W, b)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((4, 2)).astype(np.float32)
    bias = rng.standard_normal(2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return weight, bias
