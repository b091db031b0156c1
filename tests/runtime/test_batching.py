"""Dynamic batching: concurrent requests are stacked, run once, split back, never mixed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http.aio as httpclient_aio
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

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


def infer_concurrently(
    aio: Any,
    url: str,
    model: str,
    names: tuple[str, str],
    xs: list[np.ndarray],
    *,
    return_exceptions: bool = False,
    **client_options: Any,
) -> list[Any]:
    """Send one request per array, all at once, from one client of `aio` (tritonclient's grpc.aio or
    http.aio); `names` are the (input, output) tensor names. The outputs in request order (with
    `return_exceptions`, a failed request's InferenceServerException in its place)."""
    input_name, output_name = names

    async def run() -> list[Any]:
        client = aio.InferenceServerClient(url, **client_options)

        async def one(x: np.ndarray) -> np.ndarray:
            tensor = aio.InferInput(input_name, list(x.shape), np_to_triton_dtype(x.dtype))
            tensor.set_data_from_numpy(x)
            return (await client.infer(model, [tensor])).as_numpy(output_name)

        try:
            return await asyncio.gather(*(one(x) for x in xs), return_exceptions=return_exceptions)
        finally:
            await client.close()

    return asyncio.run(run())


def test_concurrent_grpc_requests_are_batched_and_match_unbatched(
    served: tuple[Server, torch.nn.Module],
) -> None:
    server, mlp = served
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(CONCURRENCY)]
    executions_before = execution_count(server, "mlp")
    requests_before = request_count(server, "mlp")
    ys = infer_concurrently(grpcclient_aio, server.grpc_url, "mlp", ("INPUT__0", "OUTPUT__0"), xs)
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
    ys = infer_concurrently(
        httpclient_aio, server.http_url, "mlp", ("INPUT__0", "OUTPUT__0"), xs, conn_limit=CONCURRENCY
    )
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
    ys = infer_concurrently(grpcclient_aio, server.grpc_url, "ragged", ("INPUT0", "OUTPUT0"), xs * 4)
    for x, y in zip(xs * 4, ys, strict=True):
        np.testing.assert_array_equal(y, x)


def test_a_failing_request_does_not_fail_its_batch_neighbours(served: tuple[Server, torch.nn.Module]) -> None:
    server = served[0]
    values = [1, 2, 13, 4, 5, 6]
    xs = [np.array([[value]], dtype=np.int64) for value in values]
    results = infer_concurrently(
        grpcclient_aio, server.grpc_url, "picky", ("X", "Y"), xs, return_exceptions=True
    )
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
