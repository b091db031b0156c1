"""Bad input gets a 4xx / INVALID_ARGUMENT / NOT_FOUND naming the problem, and the server keeps serving.

After every bad request a good one is sent and must succeed: nothing already running is lost.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.runtime.clients import Kit, make_kit
from tests.runtime.modelgen import python_echo, torchscript_mlp
from tests.runtime.serverproc import Server, start_server

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

MAX_REQUEST_BYTES = 1_000_000
KITS = ["http-binary", "http_aio-binary", "grpc", "grpc_aio"]
GOOD = np.zeros((1, 64), dtype=np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("repo")
    torchscript_mlp(repo, "mlp", max_batch_size=8)
    python_echo(repo, "text", "BYTES")
    server = start_server(
        repo, "--max-request-bytes", str(MAX_REQUEST_BYTES), log_dir=tmp_path_factory.mktemp("logs")
    )
    yield server
    assert server.alive(), server.log()
    assert server.stop() == 0, server.log()


@pytest.fixture(params=KITS)
def kit(request: pytest.FixtureRequest, server: Server) -> Kit:
    return make_kit(request.param, server.http_url, server.grpc_url)


def still_serving(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT__0", [1, 64], "FP32")
    tensor.set_data_from_numpy(GOOD)
    assert client.infer("mlp", [tensor]).as_numpy("OUTPUT__0").shape == (1, 10)
    client.close()


def expect(
    kit: Kit, server: Server, call: Callable[[Any], Any], http_status: str, grpc_status: str, *words: str
) -> None:
    error = kit.raises(call)
    assert str(error.status()) == (f"StatusCode.{grpc_status}" if kit.grpc else http_status), error
    for word in words:
        assert word in error.message(), (word, error.message())
    still_serving(server)


def expect_invalid_mlp_inputs(kit: Kit, server: Server, arrays: dict[str, np.ndarray], *words: str) -> None:
    """An infer on "mlp" with these inputs is a 400 / INVALID_ARGUMENT naming each of `words`."""
    inputs = kit.inputs(arrays)
    expect(kit, server, lambda c: c.infer("mlp", inputs), "400", "INVALID_ARGUMENT", *words)


def test_wrong_datatype(kit: Kit, server: Server) -> None:
    expect_invalid_mlp_inputs(kit, server, {"INPUT__0": GOOD.astype(np.float64)}, "FP64", "FP32", "INPUT__0")


def test_wrong_shape(kit: Kit, server: Server) -> None:
    arrays = {"INPUT__0": np.zeros((1, 63), dtype=np.float32)}
    expect_invalid_mlp_inputs(kit, server, arrays, "shape", "[1, 63]", "[-1, 64]")


def test_oversize_batch(kit: Kit, server: Server) -> None:
    arrays = {"INPUT__0": np.zeros((9, 64), dtype=np.float32)}
    expect_invalid_mlp_inputs(kit, server, arrays, "batch size 9", "max_batch_size 8")


def test_unknown_model(kit: Kit, server: Server) -> None:
    inputs = kit.inputs({"INPUT__0": GOOD})
    expect(kit, server, lambda c: c.infer("nope", inputs), "404", "NOT_FOUND", "unknown model 'nope'")


def test_unknown_version(kit: Kit, server: Server) -> None:
    inputs = kit.inputs({"INPUT__0": GOOD})
    expect(
        kit,
        server,
        lambda c: c.infer("mlp", inputs, model_version="7"),
        "404",
        "NOT_FOUND",
        "version '7'",
        "'mlp'",
    )


def test_unknown_input(kit: Kit, server: Server) -> None:
    expect_invalid_mlp_inputs(kit, server, {"INPUT__0": GOOD, "EXTRA": GOOD}, "'EXTRA'")


def test_missing_input(kit: Kit, server: Server) -> None:
    expect_invalid_mlp_inputs(kit, server, {"OTHER": GOOD}, "'OTHER'")


def test_unknown_output(kit: Kit, server: Server) -> None:
    inputs = kit.inputs({"INPUT__0": GOOD})
    outputs = kit.outputs(["NOPE"])
    expect(
        kit, server, lambda c: c.infer("mlp", inputs, outputs=outputs), "400", "INVALID_ARGUMENT", "'NOPE'"
    )


def test_unknown_model_metadata(kit: Kit, server: Server) -> None:
    expect(kit, server, lambda c: c.get_model_metadata("nope"), "404", "NOT_FOUND", "nope")
    expect(kit, server, lambda c: c.get_model_config("mlp", "3"), "404", "NOT_FOUND", "version '3'")


# --- raw HTTP: what no client would send -------------------------------------------------------


def post(
    server: Server, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(server.http_url, timeout=10)
    connection.request("POST", path, body, headers or {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, (json.loads(payload) if payload else {})


def binary_request(data: bytes, size: int, shape: list[int] | None = None) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT__0",
                    "shape": shape or [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


RAW_CASES: dict[str, tuple[bytes, dict[str, str], int, list[str]]] = {}


def raw_case(name: str, body: bytes, headers: dict[str, str], status: int, *words: str) -> None:
    RAW_CASES[name] = (body, headers, status, list(words))


raw_case("bad json", b'{"inputs": [', {}, 400, "not valid JSON")
raw_case("json not an object", b"[1, 2, 3]", {}, 400, "JSON object")
raw_case("no inputs", b"{}", {}, 400, "'inputs'")
raw_case(
    "shape not a list",
    b'{"inputs":[{"name":"INPUT__0","shape":"1,64","datatype":"FP32","data":[]}]}',
    {},
    400,
    "shape",
)
raw_case(
    "negative shape",
    b'{"inputs":[{"name":"INPUT__0","shape":[-1,64],"datatype":"FP32","data":[]}]}',
    {},
    400,
    "non-negative",
)
raw_case(
    "strings for FP32",
    json.dumps(
        {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": ["a"] * 64}]}
    ).encode(),
    {},
    400,
    "numbers",
)
raw_case(
    "too few values",
    json.dumps(
        {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 63}]}
    ).encode(),
    {},
    400,
    "63 values",
    "64",
)
raw_case(
    "ragged nested data",
    json.dumps(
        {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": [[1.0], [1.0, 2.0]]}]}
    ).encode(),
    {},
    400,
    "ragged",
)
raw_case(
    "no data at all", b'{"inputs":[{"name":"INPUT__0","shape":[1,64],"datatype":"FP32"}]}', {}, 400, "neither"
)
raw_case(
    "truncated binary payload", *binary_request(b"\x00" * 100, 256), 400, "binary_data_size 256", "truncated"
)
raw_case("binary size does not match shape", *binary_request(b"\x00" * 252, 252), 400, "252 bytes", "256")
raw_case("leftover binary bytes", *binary_request(b"\x00" * 260, 256), 400, "4 bytes")
raw_case(
    "header length beyond the body",
    b'{"inputs":[]}',
    {"Inference-Header-Content-Length": "9999"},
    400,
    "Inference-Header-Content-Length 9999",
)
raw_case("header length not a number", b"{}", {"Inference-Header-Content-Length": "ten"}, 400, "integer")
raw_case("gzip that is not gzip", b"plain text", {"Content-Encoding": "gzip"}, 400, "gzip")
raw_case(
    "truncated gzip",
    gzip.compress(b'{"inputs": []}' * 10)[:-12],
    {"Content-Encoding": "gzip"},
    400,
    "truncated",
)
raw_case("unknown content encoding", b"{}", {"Content-Encoding": "br"}, 400, "'br'")
raw_case(
    "gzip bomb",
    gzip.compress(b"\x00" * (MAX_REQUEST_BYTES + 10)),
    {"Content-Encoding": "gzip"},
    413,
    "exceeds",
)
raw_case(
    "sequence batching asked for",
    b'{"inputs":[],"parameters":{"sequence_id":5}}',
    {},
    400,
    "sequence",
)


@pytest.mark.parametrize("case", list(RAW_CASES))
def test_raw_http(server: Server, case: str) -> None:
    body, headers, status, words = RAW_CASES[case]
    got, document = post(server, "/v2/models/mlp/infer", body, headers)
    assert got == status, document
    for word in words:
        assert word in document["error"], (word, document)
    still_serving(server)


def test_bytes_that_are_not_length_prefixed(server: Server) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 6},
                }
            ]
        }
    ).encode()
    body = header + b"\x05\x00\x00\x00ab"
    status, document = post(
        server, "/v2/models/text/infer", body, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400
    assert "BYTES element 0 declares 5 bytes" in document["error"]
    still_serving(server)


def raw_exchange(server: Server, payload: bytes, read_all: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_all:
                break
    return b"".join(chunks)


def test_huge_headers_431(server: Server) -> None:
    reply = raw_exchange(
        server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert b"exceed" in reply
    still_serving(server)


def test_declared_body_too_large_413_before_reading_it(server: Server) -> None:
    reply = raw_exchange(
        server,
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        % (MAX_REQUEST_BYTES + 1),
    )
    assert reply.startswith(b"HTTP/1.1 413 ")
    still_serving(server)


def test_chunked_body_too_large_413(server: Server) -> None:
    chunk = b"a" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_REQUEST_BYTES // len(chunk) + 2))
    reply = raw_exchange(
        server, b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    )
    assert reply.startswith(b"HTTP/1.1 413 ")
    still_serving(server)


def test_malformed_http_400(server: Server) -> None:
    reply = raw_exchange(server, b"THIS IS NOT HTTP\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"malformed" in reply
    still_serving(server)


# --- raw gRPC ------------------------------------------------------------------------------------


def grpc_call(server: Server, request: Any) -> grpc.RpcError:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
    still_serving(server)
    return caught.value


def mlp_request(raw: list[bytes], shape: tuple[int, ...] = (1, 64), inputs: int = 1) -> Any:
    request = service_pb2.ModelInferRequest(model_name="mlp")
    for _ in range(inputs):
        request.inputs.add(name="INPUT__0", datatype="FP32", shape=list(shape))
    request.raw_input_contents.extend(raw)
    return request


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (mlp_request([b"\x00" * 255]), grpc.StatusCode.INVALID_ARGUMENT, ["255 bytes", "256"]),
        (
            mlp_request([b"\x00" * 256, b"\x00"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["2 raw_input_contents for 1 inputs"],
        ),
        (mlp_request([b"\x00" * 256] * 2, inputs=2), grpc.StatusCode.INVALID_ARGUMENT, ["given twice"]),
        (mlp_request([b""], shape=(1, -64)), grpc.StatusCode.INVALID_ARGUMENT, ["negative"]),
        (service_pb2.ModelInferRequest(model_name=""), grpc.StatusCode.NOT_FOUND, ["unknown model ''"]),
    ],
    ids=["short raw contents", "extra raw contents", "duplicate input", "negative dim", "no model name"],
)
def test_raw_grpc(server: Server, request_: Any, code: grpc.StatusCode, words: list[str]) -> None:
    error = grpc_call(server, request_)
    assert error.code() == code
    for word in words:
        assert word in error.details(), (word, error.details())


def test_grpc_message_over_the_limit(server: Server) -> None:
    error = grpc_call(server, mlp_request([b"\x00" * (MAX_REQUEST_BYTES + 1)]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
