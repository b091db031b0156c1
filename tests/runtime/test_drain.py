"""SIGTERM drains: readiness goes, new work is refused, in-flight work finishes, exit code 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.runtime.modelgen import python_slow, write
from tests.runtime.serverproc import http_status, start_server, wait_for

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


def slow_request(url: str, delay_ms: int, results: list[object], transport: str) -> None:
    try:
        if transport == "http":
            client = httpclient.InferenceServerClient(url, network_timeout=60)
            tensor = httpclient.InferInput("DELAY_MS", [1], "INT32")
        else:
            client = grpcclient.InferenceServerClient(url)
            tensor = grpcclient.InferInput("DELAY_MS", [1], "INT32")
        tensor.set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
        results.append(client.infer("slow", [tensor]).as_numpy("OUT").tolist())
        client.close()
    except Exception as exc:  # recorded for the assertion
        results.append(exc)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sigterm_finishes_in_flight_refuses_new_and_exits_0(tmp_path: Path, transport: str) -> None:
    repo = tmp_path / "repo"
    python_slow(repo, "slow")
    server = start_server(repo, "--drain-seconds", "20", log_dir=tmp_path / "logs")
    marker = repo / "slow" / "1" / "started"
    results: list[object] = []
    url = server.http_url if transport == "http" else server.grpc_url
    thread = threading.Thread(target=slow_request, args=(url, 1500, results, transport))
    thread.start()
    try:
        wait_for(marker.exists)  # the request is running inside the model
        server.process.send_signal(signal.SIGTERM)
        # Readiness is gone at once: the listener is closed (or answers 503 while closing).
        wait_for(
            lambda: http_status(server.http_port, "/v2/health/ready", timeout=1.0) in (None, 503), timeout=5
        )
        # New gRPC work is refused while the in-flight request is still running.
        with grpc.insecure_channel(server.grpc_url) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                    service_pb2.ServerReadyRequest(), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert thread.is_alive(), "the in-flight request should still be running"
        assert server.process.wait(timeout=30) == 0, server.log()
    finally:
        thread.join(timeout=30)
        server.stop()
    assert results == [[1500]], results
    assert "drained" in server.log()


def test_drain_deadline_exits_non_zero_and_says_so(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    python_slow(repo, "slow")
    server = start_server(repo, "--drain-seconds", "0.3", log_dir=tmp_path / "logs")
    results: list[object] = []
    thread = threading.Thread(target=slow_request, args=(server.http_url, 5000, results, "http"))
    thread.start()
    try:
        wait_for((repo / "slow" / "1" / "started").exists)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 1
        assert time.monotonic() - started < 4  # did not wait for the 5 s model call
    finally:
        thread.join(timeout=30)
        server.stop()
    assert "unfinished" in server.log()
    assert len(results) == 1
    assert isinstance(results[0], Exception)  # the client saw its connection go


def test_sigterm_while_loading_exits_promptly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(
        repo / "sleepy" / "1" / "model.py",
        """
        import pathlib
        import time

        class Model:
            def __init__(self, model_dir):
                self.model_dir = pathlib.Path(model_dir)

            def load(self):
                (self.model_dir / "loading").write_text("")
                time.sleep(60)

            def predict(self, inputs):
                return inputs
        """,
    )
    write(
        repo / "sleepy" / "config.pbtxt",
        """
        input [{ name: "X" data_type: TYPE_FP32 dims: [1] }]
        output [{ name: "X" data_type: TYPE_FP32 dims: [1] }]
        """,
    )
    server = start_server(repo, log_dir=tmp_path / "logs", wait=False)
    try:
        wait_for((repo / "sleepy" / "1" / "loading").exists)
        assert http_status(server.http_port, "/v2/health/live") == 200
        assert http_status(server.http_port, "/v2/health/ready") == 503  # not ready while loading
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0
    finally:
        server.stop()
