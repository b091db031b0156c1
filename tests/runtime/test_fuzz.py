"""Property-based fuzzing: random and malformed requests get a 4xx (never a 5xx) and the server lives.

Three generators: structured-but-wrong OIP v2 JSON/binary requests over HTTP, raw bytes on the
HTTP socket, and random ModelInferRequest messages over gRPC. The models served validate fully,
so any 5xx / INTERNAL / UNKNOWN is a server bug, not a model error.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.runtime.modelgen import DATATYPES, python_echo, torchscript_mlp
from tests.runtime.serverproc import Server, http_status, start_server

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("repo")
    torchscript_mlp(repo, "mlp", max_batch_size=4)
    python_echo(repo, "text", "BYTES")
    python_echo(repo, "ints", "INT8")
    server = start_server(repo, "--max-request-bytes", "200000", log_dir=tmp_path_factory.mktemp("logs"))
    yield server
    assert server.alive(), server.log()
    assert server.stop() == 0, server.log()


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=16,
)
names = st.sampled_from(["INPUT__0", "INPUT0", "OUTPUT__0", "x", ""]) | st.text(max_size=6)
datatypes = st.sampled_from([*DATATYPES, "FP8", "fp32", ""]) | st.text(max_size=5)
shapes = (
    st.lists(st.integers(min_value=-2, max_value=70) | json_leaf, max_size=4)
    | st.sampled_from([[1, 64], [2, 64], [1, 3], [0, 5]])
    | json_value
)
data = (
    st.lists(st.floats(width=32) | st.integers(-300, 300) | st.booleans() | st.text(max_size=4), max_size=70)
    | json_value
)
tensor = st.fixed_dictionaries(
    {"name": names, "datatype": datatypes, "shape": shapes},
    optional={
        "data": data,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-5, 300) | json_value, "binary_data": json_value}
        )
        | json_value,
    },
)
wild_document = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(tensor, max_size=3) | json_value,
        "outputs": st.lists(
            st.fixed_dictionaries({"name": names}, optional={"parameters": json_value}), max_size=2
        )
        | json_value,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_output", "sequence_id", "priority", "x"]), json_value
        )
        | json_value,
        "id": json_value,
    },
)
# The served models' own names and types, so most examples get past the first checks and
# reach shape, size and data validation.
MODELS = {"mlp": ("INPUT__0", "FP32"), "text": ("INPUT0", "BYTES"), "ints": ("INPUT0", "INT8")}
dims = st.integers(min_value=0, max_value=70) | st.just(64) | json_leaf
mostly = st.sampled_from([True, True, True, True, False])


@st.composite
def targeted_request(draw: st.DrawFn) -> tuple[str, Any]:
    model = draw(st.sampled_from(sorted(MODELS)))
    input_name, datatype = MODELS[model]
    tensors = []
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        tensor: dict[str, Any] = {
            "name": input_name if draw(mostly) else draw(names),
            "datatype": datatype if draw(mostly) else draw(datatypes),
            "shape": draw(st.lists(dims, min_size=2, max_size=2) | st.lists(dims, max_size=4)),
        }
        if draw(st.booleans()):
            tensor["data"] = draw(data)
        else:
            tensor["parameters"] = {"binary_data_size": draw(st.integers(-5, 300))}
        tensors.append(tensor)
    document: dict[str, Any] = {"inputs": tensors}
    if draw(st.booleans()):
        document["outputs"] = [
            {
                "name": draw(st.sampled_from(["OUTPUT__0", "OUTPUT0", "x"])),
                "parameters": {"binary_data": draw(st.booleans())},
            }
        ]
    if draw(st.booleans()):
        document["parameters"] = {"binary_data_output": draw(st.booleans())}
    return f"/v2/models/{model}/infer", document


paths = st.sampled_from(
    [
        *["/v2/models/mlp/infer", "/v2/models/text/infer", "/v2/models/ints/infer"] * 3,
        "/v2/models/mlp/versions/1/infer",
        "/v2/models/mlp/versions/x/infer",
        "/v2/models/nope/infer",
        "/v2/repository/index",
        "/v2/repository/models/nope/load",
    ]
)


def assert_alive(server: Server) -> None:
    assert http_status(server.http_port, "/v2/health/live") == 200, server.log()


@settings(FUZZ, max_examples=300)
@given(
    request=targeted_request() | st.tuples(paths, wild_document | json_value),
    tail=st.binary(max_size=300),
    header_length=st.sampled_from(["exact", "absent", "random"]),
    random_length=st.integers(min_value=-10, max_value=10_000),
    encoding=st.sampled_from([None, "gzip", "deflate", "identity", "br"]),
)
def test_http_requests(
    server: Server,
    request: tuple[str, Any],
    tail: bytes,
    header_length: str,
    random_length: int,
    encoding: str | None,
) -> None:
    path, document = request
    head = json.dumps(document).encode()
    headers = {}
    body = head
    if header_length != "absent":
        body = head + tail
        headers["Inference-Header-Content-Length"] = str(
            len(head) if header_length == "exact" else random_length
        )
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    connection = http.client.HTTPConnection(server.http_url, timeout=20)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    assert response.status < 500, payload
    if response.status >= 400:
        assert isinstance(json.loads(payload)["error"], str)
    assert_alive(server)


header_lines = st.lists(
    st.sampled_from(
        [
            b"Content-Length: 5",
            b"Content-Length: -1",
            b"Content-Length: 99999999999",
            b"Transfer-Encoding: chunked",
            b"Content-Encoding: gzip",
            b"Inference-Header-Content-Length: 3",
            b"Expect: 100-continue",
            b"Connection: close",
            b"Host: x",
        ]
    )
    | st.binary(max_size=40),
    max_size=5,
)


@FUZZ
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD"]) | st.binary(max_size=8),
    path=paths.map(str.encode) | st.binary(max_size=30),
    headers=header_lines,
    body=st.binary(max_size=200),
    garbage=st.booleans(),
)
def test_raw_http_bytes(
    server: Server, method: bytes, path: bytes, headers: list[bytes], body: bytes, garbage: bool
) -> None:
    if garbage:
        payload = method + path + body
    else:
        payload = (
            method + b" " + path + b" HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
        )
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=20) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer 400 and close before all of it was sent
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:
            pass
    for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply):
        assert int(status) < 500, reply[:500]
    assert_alive(server)


def _tensor(name: str, datatype: str, shape: list[int], typed: str | None, values: list[int]) -> Any:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if typed == "bytes_contents":
        tensor.contents.bytes_contents.extend(bytes([v]) * v for v in values)
    elif typed == "bool_contents":
        tensor.contents.bool_contents.extend(v % 2 == 0 for v in values)
    elif typed is not None:
        getattr(tensor.contents, typed).extend(values)
    return tensor


@st.composite
def grpc_request(draw: st.DrawFn) -> Any:
    model = draw(st.sampled_from([*sorted(MODELS), "nope", ""]))
    input_name, datatype = MODELS.get(model, ("INPUT0", "FP32"))
    tensors = [
        _tensor(
            input_name if draw(mostly) else draw(names),
            datatype if draw(mostly) else draw(datatypes),
            draw(
                st.lists(st.integers(min_value=0, max_value=70), min_size=2, max_size=2)
                | st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4)
                | st.sampled_from([[1, 64], [0, 2**62], [2**40, 2**40]])
            ),
            draw(
                st.sampled_from(
                    [None, None, "fp32_contents", "int_contents", "bytes_contents", "bool_contents"]
                )
            ),
            draw(st.lists(st.integers(0, 100), max_size=70)),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    request = service_pb2.ModelInferRequest(
        model_name=model, model_version=draw(st.sampled_from(["", "", "1", "2", "x", "-1"])), inputs=tensors
    )
    if draw(st.booleans()):
        request.raw_input_contents.extend(
            draw(
                st.lists(st.binary(max_size=300), max_size=3)
                | st.sampled_from([[b"\x00" * 256], [b"\x01\x00\x00\x00a"]])
            )
        )
    for name in draw(st.lists(names, max_size=2)):
        request.outputs.add(name=name)
    parameter = draw(st.sampled_from([None, None, "sequence_id", "binary_data_output", "x"]))
    if parameter is not None:
        request.parameters[parameter].int64_param = 1
    return request


@settings(FUZZ, max_examples=300)
@given(request=grpc_request())
def test_grpc_requests(server: Server, request: Any) -> None:
    error: grpc.RpcError | None = None
    with grpc.insecure_channel(server.grpc_url) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=20)
        except grpc.RpcError as exc:
            error = exc
    if error is not None:
        assert error.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ), (error.code(), error.details())
        assert error.details()
    assert_alive(server)
