"""Prometheus metrics on :8002/metrics with Triton's names and labels, moving as requests happen."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.runtime.modelgen import python_slow, torchscript_mlp
from tests.runtime.serverproc import Server, start_server, wait_for

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

TRITON_FAMILIES = {
    "nv_inference_request_success": "counter",
    "nv_inference_request_failure": "counter",
    "nv_inference_count": "counter",
    "nv_inference_exec_count": "counter",
    "nv_inference_pending_request_count": "gauge",
    "nv_inference_request_duration_us": "counter",
    "nv_inference_queue_duration_us": "counter",
    "nv_inference_compute_input_duration_us": "counter",
    "nv_inference_compute_infer_duration_us": "counter",
    "nv_inference_compute_output_duration_us": "counter",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("repo")
    torchscript_mlp(repo, "mlp", max_batch_size=8)
    python_slow(repo, "slow")
    server = start_server(repo, log_dir=tmp_path_factory.mktemp("logs"))
    yield server
    assert server.stop() == 0, server.log()


def mlp_infer(server: Server, rows: int, cols: int = 64) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT__0", [rows, cols], "FP32")
    tensor.set_data_from_numpy(np.zeros((rows, cols), dtype=np.float32))
    try:
        client.infer("mlp", [tensor])
    finally:
        client.close()


def test_exposition_uses_triton_names_types_and_labels(server: Server) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.metrics_port)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    text = response.read().decode()
    assert response.status == 200
    assert (response.getheader("Content-Type") or "").startswith("text/plain")
    for family, kind in TRITON_FAMILIES.items():
        assert f"# TYPE {family} {kind}\n" in text
        assert f'{family}{{model="mlp",version="1"' in text
    assert "process_cpu_seconds_total" in text or "python_info" in text
    assert "nv_gpu_utilization" not in text  # no GPU here


def test_counters_move_with_requests(server: Server) -> None:
    before = server.metrics()
    for _ in range(3):
        mlp_infer(server, rows=2)
    with pytest.raises(InferenceServerException):
        mlp_infer(server, rows=1, cols=63)
    after = server.metrics()

    def delta(name: str, **labels: str) -> float:
        key = (
            name
            + "{"
            + ",".join(['model="mlp"', 'version="1"', *(f'{k}="{v}"' for k, v in labels.items())])
            + "}"
        )
        return after[key] - before[key]

    assert delta("nv_inference_request_success") == 3
    assert delta("nv_inference_count") == 6  # rows, as Triton counts them
    assert delta("nv_inference_exec_count") == 3
    assert delta("nv_inference_request_failure", reason="OTHER") == 1
    assert delta("nv_inference_request_failure", reason="BACKEND") == 0
    for name in (
        "nv_inference_request_duration_us",
        "nv_inference_compute_infer_duration_us",
    ):
        assert delta(name) > 0, name
    for name in ("nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us"):
        assert delta(name) >= 0, name


def test_pending_request_count_is_the_queue(server: Server) -> None:
    """Three concurrent requests to a one-at-a-time model: one runs, two are pending."""
    results: list[object] = []

    def slow_call() -> None:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        tensor = httpclient.InferInput("DELAY_MS", [1], "INT32")
        tensor.set_data_from_numpy(np.array([400], dtype=np.int32))
        try:
            results.append(client.infer("slow", [tensor]).as_numpy("OUT"))
        finally:
            client.close()

    assert server.metric("nv_inference_pending_request_count", "slow") == 0
    threads = [threading.Thread(target=slow_call) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: server.metric("nv_inference_pending_request_count", "slow") == 2)
    for thread in threads:
        thread.join()
    assert len(results) == 3
    assert server.metric("nv_inference_pending_request_count", "slow") == 0
    assert server.metric("nv_inference_queue_duration_us", "slow") > 300_000  # the queued ones waited


def test_statistics_api_agrees_with_metrics(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    stats = client.get_inference_statistics("mlp")["model_stats"][0]
    client.close()
    assert stats["inference_stats"]["success"]["count"] == server.metric(
        "nv_inference_request_success", "mlp"
    )
    assert stats["execution_count"] == server.metric("nv_inference_exec_count", "mlp")
    assert stats["inference_count"] == server.metric("nv_inference_count", "mlp")


@pytest.mark.gpu
def test_gpu_metrics(server: Server) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    text = "\n".join(server.metrics())
    assert "nv_gpu_memory_total_bytes" in text
    assert "nv_gpu_memory_used_bytes" in text
