"""Dynamic batching: concurrent requests are stacked, run once, split back, never mixed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http.aio as httpclient_aio
from tritonclient.utils import InferenceServerException

from tests.runtime.modelgen import python_echo, torchscript_mlp, write
from tests.runtime.serverproc import Server, start_server

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

CONCURRENCY = 64


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, torch.nn.Module]]:
    repo = tmp_path_factory.mktemp("repo")
    # A 20 ms queue delay makes concurrent requests meet in the queue deterministically enough.
    mlp = torchscript_mlp(repo, "mlp", max_batch_size=8, delay_us=20_000)
    python_echo(repo, "ragged", "FP32", max_batch_size=16)  # variable dims: only equal shapes stack
    write(
        repo / "picky" / "1" / "model.py",
        """
        import numpy as np

        class Model:
            def predict(self, inputs):
                x = inputs["X"]
                if (x == 13).any():
                    raise ValueError("13 is unlucky")
                return {"Y": x * 2}
        """,
    )
    write(
        repo / "picky" / "config.pbtxt",
        """
        max_batch_size: 8
        input [{ name: "X" data_type: TYPE_INT64 dims: [1] }]
        output [{ name: "Y" data_type: TYPE_INT64 dims: [1] }]
        dynamic_batching { max_queue_delay_microseconds: 50000 }
        """,
    )
    server = start_server(repo, log_dir=tmp_path_factory.mktemp("logs"))
    yield server, mlp
    assert server.stop() == 0, server.log()


def execution_count(server: Server, model: str) -> int:
    return int(server.metric("nv_inference_exec_count", model))


def request_count(server: Server, model: str) -> int:
    return int(server.metric("nv_inference_request_success", model))


def test_concurrent_grpc_requests_are_batched_and_match_unbatched(
    served: tuple[Server, torch.nn.Module],
) -> None:
    server, mlp = served
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(CONCURRENCY)]
    executions_before = execution_count(server, "mlp")
    requests_before = request_count(server, "mlp")

    async def run() -> list[np.ndarray]:
        client = grpcclient_aio.InferenceServerClient(server.grpc_url)

        async def one(x: np.ndarray) -> np.ndarray:
            tensor = grpcclient_aio.InferInput("INPUT__0", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = await client.infer("mlp", [tensor])
            return result.as_numpy("OUTPUT__0")

        try:
            return await asyncio.gather(*(one(x) for x in xs))
        finally:
            await client.close()

    ys = asyncio.run(run())
    with torch.no_grad():
        for x, y in zip(xs, ys, strict=True):
            assert y.shape == (x.shape[0], 10)
            np.testing.assert_allclose(y, mlp(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    executions = execution_count(server, "mlp") - executions_before
    assert request_count(server, "mlp") - requests_before == CONCURRENCY
    assert executions < CONCURRENCY  # stacked, not one execution per request


def test_concurrent_http_requests_are_batched(served: tuple[Server, torch.nn.Module]) -> None:
    server, mlp = served
    xs = [np.full((1, 64), i / 10, dtype=np.float32) for i in range(CONCURRENCY)]
    executions_before = execution_count(server, "mlp")

    async def run() -> list[np.ndarray]:
        client = httpclient_aio.InferenceServerClient(server.http_url, conn_limit=CONCURRENCY)

        async def one(x: np.ndarray) -> np.ndarray:
            tensor = httpclient_aio.InferInput("INPUT__0", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            return (await client.infer("mlp", [tensor])).as_numpy("OUTPUT__0")

        try:
            return await asyncio.gather(*(one(x) for x in xs))
        finally:
            await client.close()

    ys = asyncio.run(run())
    with torch.no_grad():
        expected = mlp(torch.from_numpy(np.concatenate(xs))).numpy()
    np.testing.assert_allclose(np.concatenate(ys), expected, rtol=1e-4, atol=1e-5)
    assert execution_count(server, "mlp") - executions_before < CONCURRENCY


def test_batch_statistics_show_stacked_batches(served: tuple[Server, torch.nn.Module]) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(served[0].http_url)
    stats = client.get_inference_statistics("mlp")["model_stats"][0]
    client.close()
    sizes = {entry["batch_size"] for entry in stats["batch_stats"]}
    assert max(sizes) > 1
    assert max(sizes) <= 8  # never more rows than max_batch_size


def test_requests_with_different_shapes_are_not_stacked(served: tuple[Server, torch.nn.Module]) -> None:
    server = served[0]
    xs = [
        np.arange(length, dtype=np.float32).reshape(1, length) + 100 * length
        for length in (1, 2, 3, 2, 1, 3, 5)
    ]

    async def run() -> list[np.ndarray]:
        client = grpcclient_aio.InferenceServerClient(server.grpc_url)

        async def one(x: np.ndarray) -> np.ndarray:
            tensor = grpcclient_aio.InferInput("INPUT0", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            return (await client.infer("ragged", [tensor])).as_numpy("OUTPUT0")

        try:
            return await asyncio.gather(*(one(x) for x in xs * 4))
        finally:
            await client.close()

    for x, y in zip(xs * 4, asyncio.run(run()), strict=True):
        np.testing.assert_array_equal(y, x)


def test_a_failing_request_does_not_fail_its_batch_neighbours(served: tuple[Server, torch.nn.Module]) -> None:
    server = served[0]
    values = [1, 2, 13, 4, 5, 6]

    async def run() -> list[np.ndarray | InferenceServerException]:
        client = grpcclient_aio.InferenceServerClient(server.grpc_url)

        async def one(value: int) -> np.ndarray:
            tensor = grpcclient_aio.InferInput("X", [1, 1], "INT64")
            tensor.set_data_from_numpy(np.array([[value]], dtype=np.int64))
            return (await client.infer("picky", [tensor])).as_numpy("Y")

        try:
            return await asyncio.gather(*(one(v) for v in values), return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(run())
    for value, result in zip(values, results, strict=True):
        if value == 13:
            assert isinstance(result, InferenceServerException)
            assert "13 is unlucky" in result.message()
        else:
            assert isinstance(result, np.ndarray), result
            assert result.tolist() == [[value * 2]]
    assert server.metric("nv_inference_request_failure", "picky", reason="BACKEND") == 1


def test_request_larger_than_max_batch_size_is_rejected(served: tuple[Server, torch.nn.Module]) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    server = served[0]
    x = np.zeros((9, 64), dtype=np.float32)
    for module, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
        client = module.InferenceServerClient(url)
        tensor = module.InferInput("INPUT__0", [9, 64], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("mlp", [tensor])
        assert "batch size 9" in caught.value.message()
        assert "max_batch_size 8" in caught.value.message()
        client.close()
