"""Smoke test of the runtime benchmark's harness (bench/runtime_bench.py), not of its numbers.

It checks that the repositories the benchmark writes are what both servers expect and that one short
window against our server completes with every checked answer correct. Speed is measured by the
benchmark itself (`make bench-runtime`), never asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "runtime_bench.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runtime_bench", BENCH)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench()


def test_repositories_hold_the_same_model_and_budget(bench: ModuleType, tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    specs = list(bench.MODELS.values())
    modules = bench.write_repositories(tmp_path, specs, 32, 700)
    for spec in specs:
        config = text_format.Parse(
            (tmp_path / "modelplane" / spec.name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )
        assert config.platform == "pytorch_libtorch"
        assert config.max_batch_size == 32
        assert config.dynamic_batching.max_queue_delay_microseconds == 700
        assert list(config.input[0].dims) == list(spec.row_shape)
        assert config.input[0].name == "INPUT__0"
        assert config.output[0].name == "OUTPUT__0"

        settings = json.loads((tmp_path / "mlserver" / spec.name / "model-settings.json").read_text())
        assert settings["max_batch_size"] == 32
        assert settings["max_batch_time"] == pytest.approx(0.0007)

        # Both repositories hold the same TorchScript file, and it computes what the eager model does.
        ours = (tmp_path / "modelplane" / spec.name / "1" / "model.pt").read_bytes()
        assert ours == (tmp_path / "mlserver" / spec.name / "model.pt").read_bytes()
        loaded = torch.jit.load(str(tmp_path / "modelplane" / spec.name / "1" / "model.pt"))
        inputs = bench.make_inputs(spec, count=4)
        expected = bench.expected_outputs(modules[spec.name], inputs)
        torch.manual_seed(spec.seed)
        eager = spec.build().eval()
        with torch.inference_mode():
            np.testing.assert_allclose(loaded(torch.from_numpy(inputs[0])).numpy(), expected[0], rtol=1e-5)
            np.testing.assert_allclose(eager(torch.from_numpy(inputs[1])).numpy(), expected[1], rtol=1e-5)


def test_models_are_deterministic(bench: ModuleType) -> None:
    spec = bench.MODELS["mlp"]
    first = bench.expected_outputs(bench.build_torchscript(spec), bench.make_inputs(spec, count=3))
    second = bench.expected_outputs(bench.build_torchscript(spec), bench.make_inputs(spec, count=3))
    np.testing.assert_array_equal(first, second)


def test_one_window_against_our_server(bench: ModuleType, tmp_path: Path) -> None:
    if importlib.util.find_spec("modelplane_runtime.cli") is None:
        pytest.skip("modelplane_runtime.cli (the server) is not there yet")
    spec = bench.MODELS["mlp"]
    modules = bench.write_repositories(tmp_path, [spec], 32, 1000)
    inputs = bench.make_inputs(spec, count=8)
    expected = bench.expected_outputs(modules[spec.name], inputs)
    server = bench.modelplane_server(tmp_path / "modelplane", tmp_path / "logs", 1, 32, 1000, None)
    server.start()
    try:
        server.wait_ready([spec.name], timeout_s=120)
        window = bench.run_window(server, [server], spec, inputs, expected, 4, 0, 0.2, 0.5, 1)
        # The same server judged against wrong expectations: every checked answer must be flagged,
        # so a server that answers wrongly can never win the benchmark.
        wrong = bench.run_window(server, [server], spec, inputs, expected + 1.0, 2, 1, 0.1, 0.2, 1)
    finally:
        server.stop()
    assert window.first_error == ""
    assert (window.errors, window.mismatches) == (0, 0)
    assert window.count > 0
    assert window.verified > 0
    assert wrong.mismatches == wrong.verified > 0
    assert "wrong output" in wrong.first_error
