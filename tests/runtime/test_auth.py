"""Bearer-token auth on HTTP (Authorization header) and gRPC (authorization metadata); health open."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.runtime.clients import Kit, make_kit
from tests.runtime.modelgen import python_echo
from tests.runtime.serverproc import Server, start_server

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

TOKEN = "s3cret-t0ken"
KITS = ["http-binary", "http_aio-binary", "grpc", "grpc_aio"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("repo")
    python_echo(repo, "echo", "INT32")
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")  # mounted secrets often end with a newline
    server = start_server(repo, "--auth-token-file", str(token_file), log_dir=tmp_path_factory.mktemp("logs"))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(params=KITS)
def kit(request: pytest.FixtureRequest, server: Server) -> Kit:
    return make_kit(request.param, server.http_url, server.grpc_url)


def unauthenticated(kit: Kit, status: str) -> bool:
    return status == ("StatusCode.UNAUTHENTICATED" if kit.grpc else "401")


X = np.array([[1, 2, 3]], dtype=np.int32)


def test_health_is_open(kit: Kit) -> None:
    assert kit.call(lambda c: c.is_server_live()) is True
    assert kit.call(lambda c: c.is_server_ready()) is True


def test_calls_without_a_token_are_refused(kit: Kit) -> None:
    for call in (
        lambda c: c.infer("echo", kit.inputs({"INPUT0": X})),
        lambda c: c.get_model_metadata("echo"),
        lambda c: c.get_server_metadata(),
        lambda c: c.get_inference_statistics(),
        lambda c: c.get_model_repository_index(),
    ):
        error = kit.raises(call)
        assert unauthenticated(kit, str(error.status())), error
        assert "bearer token" in error.message()


def test_a_wrong_token_is_refused(kit: Kit) -> None:
    headers = {"Authorization" if not kit.grpc else "authorization": "Bearer wrong"}
    error = kit.raises(lambda c: c.infer("echo", kit.inputs({"INPUT0": X}), headers=headers))
    assert unauthenticated(kit, str(error.status()))


def test_the_right_token_is_accepted(kit: Kit) -> None:
    headers = {"Authorization" if not kit.grpc else "authorization": f"Bearer {TOKEN}"}
    result = kit.call(lambda c: c.infer("echo", kit.inputs({"INPUT0": X}), headers=headers))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), X)
    metadata = kit.call(lambda c: c.get_model_metadata("echo", headers=headers))
    assert metadata is not None


def test_grpc_stream_needs_the_token(server: Server) -> None:
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 3])
    request.raw_input_contents.append(X.tobytes())
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ModelStreamInfer(iter([request])))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        replies = list(
            stub.ModelStreamInfer(iter([request]), metadata=[("authorization", f"Bearer {TOKEN}")])
        )
    assert [reply.error_message for reply in replies] == [""]


def test_metrics_port_is_open(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.metrics_port)
    connection.request("GET", "/metrics")
    assert connection.getresponse().status == 200
