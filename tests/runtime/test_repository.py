"""The model repository extension: index, load (with config and file overrides), unload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.clients import KIT_IDS, Kit, as_dict, make_kit
from tests.runtime.modelgen import mlp_module, python_echo, torchscript_mlp
from tests.runtime.serverproc import Server, start_server

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

KITS = [k for k in KIT_IDS if not k.endswith("json")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    torchscript_mlp(repo, "mlp")
    python_echo(repo, "echo", "FP32")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(repo, "--model-name", "mlp", log_dir=tmp_path_factory.mktemp("logs"))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(params=KITS)
def kit(request: pytest.FixtureRequest, server: Server) -> Kit:
    return make_kit(request.param, server.http_url, server.grpc_url)


def index(kit: Kit) -> dict[str, dict[str, str]]:
    rows = kit.call(lambda c: c.get_model_repository_index())
    if kit.grpc:
        rows = as_dict(kit, rows).get("models", [])
    return {row["name"]: row for row in rows}


def infer_mlp(kit: Kit, model: str = "mlp") -> np.ndarray:
    x = np.ones((1, 64), dtype=np.float32)
    return kit.infer(model, {"INPUT__0": x}).as_numpy("OUTPUT__0")


def test_index_load_unload_cycle(kit: Kit) -> None:
    rows = index(kit)
    assert rows["mlp"].get("state") == "READY"
    assert (
        "state" not in rows["echo"] or rows["echo"]["state"] == "UNAVAILABLE"
    )  # in the repository, not loaded

    kit.call(lambda c: c.load_model("echo"))
    assert index(kit)["echo"]["state"] == "READY"
    assert kit.call(lambda c: c.is_model_ready("echo")) is True

    kit.call(lambda c: c.unload_model("echo"))
    row = index(kit)["echo"]
    assert (row["state"], row["reason"]) == ("UNAVAILABLE", "unloaded")
    assert kit.call(lambda c: c.is_model_ready("echo")) is False
    error = kit.raises(lambda c: c.infer("echo", kit.inputs({"INPUT0": np.zeros((1, 2), np.float32)})))
    assert "not ready" in error.message()
    assert kit.call(lambda c: c.is_server_ready()) is True  # an unloaded model does not gate readiness
    np.testing.assert_allclose(infer_mlp(kit).shape, (1, 10))  # others keep serving


def test_load_with_a_config_override(kit: Kit) -> None:
    config = json.dumps(
        {
            "max_batch_size": 2,
            "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [64]}],
            "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [10]}],
        }
    )
    kit.call(lambda c: c.load_model("mlp", config=config))
    result = as_dict(kit, kit.call(lambda c: c.get_model_config("mlp")))
    assert int(result.get("config", result)["max_batch_size"]) == 2
    kit.call(lambda c: c.load_model("mlp"))  # back to the repository's own config
    result = as_dict(kit, kit.call(lambda c: c.get_model_config("mlp")))
    assert int(result.get("config", result)["max_batch_size"]) == 8


def test_load_with_files(kit: Kit, repo: Path) -> None:
    config_json = json.dumps(
        {
            "max_batch_size": 4,
            "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [64]}],
            "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [10]}],
        }
    )
    weights = (repo / "mlp" / "1" / "model.pt").read_bytes()
    kit.call(lambda c: c.load_model("uploaded", config=config_json, files={"file:1/model.pt": weights}))
    y = infer_mlp(kit, "uploaded")
    import torch

    with torch.no_grad():
        expected = mlp_module(0)(torch.ones(1, 64)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    kit.call(lambda c: c.unload_model("uploaded"))


def test_failed_reload_keeps_the_serving_version(kit: Kit, repo: Path) -> None:
    before = infer_mlp(kit)
    config = repo / "mlp" / "config.pbtxt"
    original = config.read_text()
    config.write_text(original + "\nnot valid pbtxt {{\n")
    try:
        error = kit.raises(lambda c: c.load_model("mlp"))
        assert str(config) in error.message()
    finally:
        config.write_text(original)
    np.testing.assert_array_equal(infer_mlp(kit), before)
    assert kit.call(lambda c: c.is_server_ready()) is True


def test_unload_unknown_model(kit: Kit) -> None:
    error = kit.raises(lambda c: c.unload_model("nope"))
    assert "not loaded" in error.message()


def test_a_second_server_can_reload_after_files_change(tmp_path: Path) -> None:
    """Reload picks up a new version dropped into the repository."""
    repo = tmp_path / "repo"
    torchscript_mlp(repo, "mlp", seed=0)
    server = start_server(repo, log_dir=tmp_path / "logs")
    kit = make_kit("http-binary", server.http_url, server.grpc_url)
    try:
        first = infer_mlp(kit)
        (repo / "mlp" / "2").mkdir()
        import torch

        torch.jit.trace(mlp_module(5), torch.zeros(1, 64)).save(str(repo / "mlp" / "2" / "model.pt"))
        kit.call(lambda c: c.load_model("mlp"))
        assert kit.call(lambda c: c.get_model_metadata("mlp"))["versions"] == ["2"]
        assert not np.allclose(infer_mlp(kit), first)
    finally:
        assert server.stop() == 0
