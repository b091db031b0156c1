"""Every datatype round-trips exactly, through every client and both HTTP tensor modes.

Echo models per datatype: plain-Python ones (the only kind that carries BYTES) and TorchScript
identities (every other datatype through torch, including BOOL, FP16, BF16 and the unsigned ints).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import ml_dtypes
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.runtime.clients import KIT_IDS, Kit, make_kit
from tests.runtime.modelgen import DATATYPES, python_echo, sample, torchscript_echo, write
from tests.runtime.serverproc import Server, start_server

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

TORCH_DATATYPES = [dt for dt in DATATYPES if dt != "BYTES"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("repo")
    for datatype in DATATYPES:
        python_echo(repo, f"py_{datatype.lower()}", datatype)
    for datatype in TORCH_DATATYPES:
        torchscript_echo(repo, f"ts_{datatype.lower()}", datatype)
    write(
        repo / "scalar" / "1" / "model.py",
        """
        import numpy as np

        class Model:
            def predict(self, inputs):
                return {"TOTAL": np.float64(inputs["X"].sum())}
        """,
    )
    write(
        repo / "scalar" / "config.pbtxt",
        """
        input [{ name: "X" data_type: TYPE_FP64 dims: [-1] }]
        output [{ name: "TOTAL" data_type: TYPE_FP64 dims: [] }]
        """,
    )
    server = start_server(repo, log_dir=tmp_path_factory.mktemp("logs"))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(params=KIT_IDS)
def kit(request: pytest.FixtureRequest, server: Server) -> Kit:
    return make_kit(request.param, server.http_url, server.grpc_url)


def normalized(array: np.ndarray) -> np.ndarray:
    """BYTES come back as bytes (binary) or str (JSON): compare them as bytes."""
    if array.dtype == object:
        return np.array(
            [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1)], dtype=object
        ).reshape(array.shape)
    return array


def check_echo(kit: Kit, model: str, datatype: str) -> None:
    x = sample(datatype, (2, 3), seed=len(datatype))
    result = kit.infer(
        model,
        {"INPUT0" if model.startswith("py_") else "INPUT__0": x},
        ["OUTPUT0" if model.startswith("py_") else "OUTPUT__0"],
        datatypes={"INPUT0": datatype, "INPUT__0": datatype},
    )
    y = result.as_numpy("OUTPUT0" if model.startswith("py_") else "OUTPUT__0")
    assert y.shape == x.shape
    if datatype == "BYTES":
        np.testing.assert_array_equal(normalized(y), x)
        return
    assert y.dtype == x.dtype, (y.dtype, x.dtype)
    if datatype in ("FP16", "FP32", "FP64", "BF16"):
        assert y.tobytes() == x.tobytes()  # bit-exact, JSON included
    else:
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_python_echo(kit: Kit, datatype: str) -> None:
    check_echo(kit, f"py_{datatype.lower()}", datatype)


@pytest.mark.parametrize("datatype", TORCH_DATATYPES)
def test_torch_echo(kit: Kit, datatype: str) -> None:
    check_echo(kit, f"ts_{datatype.lower()}", datatype)


@pytest.mark.parametrize("kit_id", ["http-binary", "http_aio-binary", "grpc", "grpc_aio"])
def test_bytes_that_are_not_text_need_binary(server: Server, kit_id: str) -> None:
    kit = make_kit(kit_id, server.http_url, server.grpc_url)
    x = np.array([[b"\xff\xfe\x00raw", b"\x00"]], dtype=object)
    y = kit.infer("py_bytes", {"INPUT0": x}, ["OUTPUT0"]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(y, x)


def test_bytes_that_are_not_text_in_json_output_is_a_clear_error(server: Server) -> None:
    kit = make_kit("http-binary", server.http_url, server.grpc_url)
    x = np.array([[b"\xff"]], dtype=object)
    inputs = kit.inputs({"INPUT0": x})
    outputs = [kit.module.InferRequestedOutput("OUTPUT0", binary_data=False)]
    error = kit.raises(lambda c: c.infer("py_bytes", inputs, outputs=outputs))
    assert error.status() == "400"
    assert "UTF-8" in error.message()
    assert "OUTPUT0" in error.message()


def test_bf16_json_output(server: Server) -> None:
    kit = make_kit("http-json", server.http_url, server.grpc_url)
    x = np.array([[1.5, -2.25, 3.0e38]], dtype=ml_dtypes.bfloat16)
    y = kit.infer("ts_bf16", {"INPUT__0": x}, ["OUTPUT__0"]).as_numpy("OUTPUT__0")
    assert y.dtype == ml_dtypes.bfloat16
    assert y.tobytes() == x.tobytes()


def test_scalar_output(kit: Kit) -> None:
    y = kit.infer("scalar", {"X": np.array([1.5, 2.0, 3.25])}, ["TOTAL"]).as_numpy("TOTAL")
    assert y.shape == ()
    assert float(y) == 6.75


def test_empty_tensor(kit: Kit) -> None:
    x = np.zeros((1, 0), dtype=np.float32)
    y = kit.infer("py_fp32", {"INPUT0": x}, ["OUTPUT0"]).as_numpy("OUTPUT0")
    assert y.shape == (1, 0)


@pytest.mark.parametrize("datatype", [dt for dt in DATATYPES if dt not in ("FP16", "BF16")])
def test_grpc_typed_contents(server: Server, datatype: str) -> None:
    """gRPC typed `contents` in (each datatype's field), raw contents out."""
    field = {
        "BOOL": "bool_contents",
        "INT8": "int_contents",
        "INT16": "int_contents",
        "INT32": "int_contents",
        "INT64": "int64_contents",
        "UINT8": "uint_contents",
        "UINT16": "uint_contents",
        "UINT32": "uint_contents",
        "UINT64": "uint64_contents",
        "FP32": "fp32_contents",
        "FP64": "fp64_contents",
        "BYTES": "bytes_contents",
    }[datatype]
    x = sample(datatype, (1, 4), seed=3)
    request = service_pb2.ModelInferRequest(model_name=f"py_{datatype.lower()}")
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=[1, 4])
    getattr(tensor.contents, field).extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    [raw] = response.raw_output_contents
    if datatype == "BYTES":
        from tritonclient.utils import deserialize_bytes_tensor

        np.testing.assert_array_equal(deserialize_bytes_tensor(raw), x.reshape(-1))
    else:
        np.testing.assert_array_equal(np.frombuffer(raw, dtype=x.dtype).reshape(1, 4), x)


def test_grpc_fp16_needs_raw_contents(server: Server) -> None:
    request = service_pb2.ModelInferRequest(model_name="py_fp16")
    request.inputs.add(name="INPUT0", datatype="FP16", shape=[1, 1]).contents.fp32_contents.append(1.0)
    with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in caught.value.details()
