"""Every row of the OIP v2 / tritonclient checklist, with http, grpc and both aio clients.

HTTP clients run twice: binary tensors (their default) and JSON tensors (`binary_data=False`).
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.runtime.clients import KIT_IDS, Kit, as_dict, make_kit
from tests.runtime.modelgen import TwoInTwoOut, export_two_io, python_echo, torchscript_mlp
from tests.runtime.serverproc import Server, start_server

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, torch.nn.Module]]:
    repo = tmp_path_factory.mktemp("repo")
    mlp = torchscript_mlp(repo, "mlp", max_batch_size=8)
    export_two_io(repo, "two_io")
    python_echo(repo, "echo", "FP32")
    server = start_server(repo, log_dir=tmp_path_factory.mktemp("logs"))
    yield server, mlp
    assert server.stop() == 0, server.log()


@pytest.fixture
def server(served: tuple[Server, torch.nn.Module]) -> Server:
    return served[0]


@pytest.fixture(params=KIT_IDS)
def kit(request: pytest.FixtureRequest, server: Server) -> Kit:
    return make_kit(request.param, server.http_url, server.grpc_url)


def reference(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_live_and_ready(kit: Kit) -> None:
    assert kit.call(lambda c: c.is_server_live()) is True
    assert kit.call(lambda c: c.is_server_ready()) is True


def test_server_metadata_lists_only_implemented_extensions(kit: Kit) -> None:
    metadata = as_dict(kit, kit.call(lambda c: c.get_server_metadata()))
    assert metadata["name"] == "modelplane"
    assert metadata["version"]
    assert {"binary_tensor_data", "statistics", "model_configuration", "model_repository"} <= set(
        metadata["extensions"]
    )
    assert "system_shared_memory" not in metadata["extensions"]


def test_model_ready_with_and_without_version(kit: Kit) -> None:
    assert kit.call(lambda c: c.is_model_ready("mlp")) is True
    assert kit.call(lambda c: c.is_model_ready("mlp", "1")) is True
    assert kit.call(lambda c: c.is_model_ready("mlp", "2")) is False
    assert kit.call(lambda c: c.is_model_ready("no_such_model")) is False


@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata(kit: Kit, version: str) -> None:
    metadata = as_dict(kit, kit.call(lambda c: c.get_model_metadata("mlp", version)))
    assert metadata["name"] == "mlp"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "pytorch_libtorch"
    [tensor] = metadata["inputs"]
    assert (tensor["name"], tensor["datatype"], [int(d) for d in tensor["shape"]]) == (
        "INPUT__0",
        "FP32",
        [-1, 64],
    )
    [tensor] = metadata["outputs"]
    assert (tensor["name"], tensor["datatype"], [int(d) for d in tensor["shape"]]) == (
        "OUTPUT__0",
        "FP32",
        [-1, 10],
    )


def test_model_metadata_introspected_from_torch_export(kit: Kit) -> None:
    metadata = as_dict(kit, kit.call(lambda c: c.get_model_metadata("two_io")))
    assert metadata["platform"] == "torch_export"
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata["inputs"]] == [
        ("a", "FP32", [-1, 4]),
        ("b", "FP32", [-1, 4]),
    ]
    assert [t["name"] for t in metadata["outputs"]] == ["sum", "scaled"]


def test_model_config_is_triton_model_config(kit: Kit) -> None:
    result = as_dict(kit, kit.call(lambda c: c.get_model_config("mlp")))
    config = result.get("config", result)  # gRPC wraps it in ModelConfigResponse
    assert config["name"] == "mlp"
    assert int(config["max_batch_size"]) == 8
    [tensor] = config["input"]
    assert tensor["name"] == "INPUT__0"
    assert tensor["data_type"] == "TYPE_FP32"
    assert [int(d) for d in tensor["dims"]] == [64]
    assert config["output"][0]["data_type"] == "TYPE_FP32"
    assert "dynamic_batching" in config


def test_http_config_json_uses_numbers_for_64_bit_fields(server: Server) -> None:
    connection = http.client.HTTPConnection(server.http_url)
    connection.request("GET", "/v2/models/mlp/versions/1/config")
    config = json.loads(connection.getresponse().read())
    assert config["input"][0]["dims"] == [64]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0


def test_infer_matches_the_model(kit: Kit, served: tuple[Server, torch.nn.Module]) -> None:
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    result = kit.infer("mlp", {"INPUT__0": x}, ["OUTPUT__0"])
    y = result.as_numpy("OUTPUT__0")
    assert y.dtype == np.float32
    assert y.shape == (3, 10)
    np.testing.assert_allclose(y, reference(served[1], x), rtol=1e-5, atol=1e-6)


def test_infer_with_default_outputs_returns_all_in_binary(kit: Kit) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.float32)
    result = kit.call(lambda c: c.infer("two_io", kit.inputs({"a": a, "b": b})))
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(result.as_numpy("scaled"), 2 * a * b)


def test_infer_selected_output_only(kit: Kit) -> None:
    a = np.full((1, 4), 3.0, dtype=np.float32)
    b = np.full((1, 4), 0.5, dtype=np.float32)
    result = kit.infer("two_io", {"a": a, "b": b}, ["scaled"])
    np.testing.assert_array_equal(
        result.as_numpy("scaled"), TwoInTwoOut()(torch.tensor(a), torch.tensor(b))["scaled"]
    )
    assert result.as_numpy("sum") is None


def test_infer_with_explicit_version_and_request_id(kit: Kit) -> None:
    x = np.zeros((1, 64), dtype=np.float32)
    result = kit.infer("mlp", {"INPUT__0": x}, ["OUTPUT__0"], model_version="1", request_id="req-42")
    response = result.get_response()
    if kit.grpc:
        assert (response.id, response.model_name, response.model_version) == ("req-42", "mlp", "1")
    else:
        assert (response["id"], response["model_name"], response["model_version"]) == ("req-42", "mlp", "1")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compression_both_ways(kit: Kit, algorithm: str, served: tuple[Server, torch.nn.Module]) -> None:
    x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    if kit.grpc:
        result = kit.infer("mlp", {"INPUT__0": x}, ["OUTPUT__0"], compression_algorithm=algorithm)
    else:
        result = kit.infer(
            "mlp",
            {"INPUT__0": x},
            ["OUTPUT__0"],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), reference(served[1], x), rtol=1e-5, atol=1e-6)


def test_http_response_is_compressed_when_asked(server: Server) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    ).encode()
    for encoding, decode in (("gzip", gzip.decompress), ("deflate", zlib.decompress)):
        connection = http.client.HTTPConnection(server.http_url)
        connection.request("POST", "/v2/models/mlp/infer", body, {"Accept-Encoding": f"br;q=1, {encoding}"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Encoding") == encoding
        document = json.loads(decode(response.read()))
        assert document["outputs"][0]["shape"] == [1, 10]


def test_statistics(kit: Kit) -> None:
    kit.infer("mlp", {"INPUT__0": np.zeros((2, 64), dtype=np.float32)}, ["OUTPUT__0"])
    for version in ("", "1"):

        def statistics(client: Any, version: str = version) -> Any:
            return client.get_inference_statistics("mlp", version)

        stats = as_dict(kit, kit.call(statistics))
        [entry] = stats["model_stats"]
        assert (entry["name"], entry["version"]) == ("mlp", "1")
        assert int(entry["inference_stats"]["success"]["count"]) >= 1
        assert int(entry["inference_stats"]["success"]["ns"]) > 0
        assert int(entry["inference_count"]) >= 2
        assert int(entry["execution_count"]) >= 1
        assert entry["batch_stats"]
    everything = as_dict(kit, kit.call(lambda c: c.get_inference_statistics()))
    assert {e["name"] for e in everything["model_stats"]} == {"mlp", "two_io", "echo"}


def test_http_json_accepts_nested_data(server: Server, served: tuple[Server, torch.nn.Module]) -> None:
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    body = json.dumps(
        {"inputs": [{"name": "INPUT__0", "shape": [2, 64], "datatype": "FP32", "data": x.tolist()}]}
    )
    connection = http.client.HTTPConnection(server.http_url)
    connection.request("POST", "/v2/models/mlp/infer", body)
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    document = json.loads(response.read())
    y = np.array(document["outputs"][0]["data"], dtype=np.float32).reshape(document["outputs"][0]["shape"])
    np.testing.assert_allclose(y, reference(served[1], x), rtol=1e-5, atol=1e-6)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """Read `count` HTTP responses (Content-Length framed) from a raw socket."""
    buffer = b""
    responses: list[tuple[int, bytes]] = []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        body, buffer = buffer[:length], buffer[length:]
        if status != 100:
            responses.append((status, body))
    return responses


def test_http_keep_alive_and_pipelining_answer_in_order(server: Server) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]}
    )
    infer = f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ready = "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    missing = "GET /v2/models/nope HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        sock.sendall((infer + ready + missing + infer).encode())
        statuses = [status for status, _ in _read_responses(sock, 4)]
        assert statuses == [200, 200, 404, 200]
        sock.sendall(ready.encode())  # still open: keep-alive
        assert _read_responses(sock, 1)[0][0] == 200


def test_http_chunked_request_body(server: Server) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    )
    chunks = [body[:10], body[10:100], body[100:]]
    encoded = "".join(f"{len(c):x}\r\n{c}\r\n" for c in chunks) + "0\r\n\r\n"
    request = f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{encoded}"
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        sock.sendall(request.encode())
        [(status, payload)] = _read_responses(sock, 1)
    assert status == 200, payload
    assert json.loads(payload)["outputs"][0]["shape"] == [1, 10]


def test_http_expect_100_continue(server: Server) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    )
    head = f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        sock.sendall(head.encode())
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body.encode())
        [(status, _)] = _read_responses(sock, 1)
    assert status == 200


def test_grpc_typed_contents_in_raw_contents_out(
    server: Server, served: tuple[Server, torch.nn.Module]
) -> None:
    x = np.random.default_rng(4).standard_normal((1, 64)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="mlp", id="typed")
    tensor = request.inputs.add(name="INPUT__0", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.id == "typed"
    assert len(response.raw_output_contents) == 1
    y = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(1, 10)
    np.testing.assert_allclose(y, reference(served[1], x), rtol=1e-5, atol=1e-6)


def test_grpc_unimplemented_rpcs_say_so(server: Server) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "SystemSharedMemoryStatus" in caught.value.details()


def test_large_messages_above_grpc_default_4mb(kit: Kit) -> None:
    x = np.random.default_rng(6).standard_normal((1, 1_500_000)).astype(np.float32)  # 6 MB each way
    result = kit.infer("echo", {"INPUT0": x}, ["OUTPUT0"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_grpc_stream_infer(server: Server, served: tuple[Server, torch.nn.Module]) -> None:
    results: list[Any] = []
    client = grpcclient.InferenceServerClient(server.grpc_url)
    xs = [np.full((1, 64), float(i), dtype=np.float32) for i in range(5)]
    try:
        client.start_stream(callback=lambda result, error: results.append((result, error)))
        for index, x in enumerate(xs):
            tensor = grpcclient.InferInput("INPUT__0", [1, 64], "FP32")
            tensor.set_data_from_numpy(x)
            client.async_stream_infer("mlp", [tensor], request_id=str(index))
        bad = grpcclient.InferInput("INPUT__0", [1, 63], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
        client.async_stream_infer("mlp", [bad], request_id="bad")
        client.stop_stream()
    finally:
        client.close()
    assert len(results) == 6
    errors = [error for _, error in results if error is not None]
    assert len(errors) == 1
    assert "shape" in str(errors[0])
    by_id = {r.get_response().id: r for r, e in results if e is None}
    for index, x in enumerate(xs):
        np.testing.assert_allclose(
            by_id[str(index)].as_numpy("OUTPUT__0"), reference(served[1], x), rtol=1e-5, atol=1e-6
        )


def test_grpc_aio_stream_infer(server: Server) -> None:
    async def run() -> list[Any]:
        client = grpcclient_aio.InferenceServerClient(server.grpc_url)

        async def requests() -> Any:
            for index in range(4):
                tensor = grpcclient_aio.InferInput("INPUT__0", [1, 64], "FP32")
                tensor.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
                yield {"model_name": "mlp", "inputs": [tensor], "request_id": str(index)}

        collected = []
        try:
            async for result, error in client.stream_infer(requests()):
                assert error is None
                collected.append(result.get_response().id)
        finally:
            await client.close()
        return collected

    assert sorted(asyncio.run(run())) == ["0", "1", "2", "3"]


def test_http_route_errors(server: Server) -> None:
    connection = http.client.HTTPConnection(server.http_url)
    for method, path, status in [
        ("GET", "/nope", 404),
        ("GET", "/v2/models/mlp/infer", 405),
        ("POST", "/v2/models/mlp", 405),
        ("GET", "/v2/models/mlp/versions/9", 404),
        ("GET", "/v2/models/mlp/whatever", 404),
    ]:
        connection.request(method, path)
        response = connection.getresponse()
        document = json.loads(response.read())
        assert response.status == status, (method, path)
        assert document["error"]
