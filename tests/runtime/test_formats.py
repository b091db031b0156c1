"""Each model format loads, introspects where it can, and answers like the model itself.

Also the repository shapes (Triton repository, one model folder, one file), versions, the
operator's override flags, precision, and load errors that name the file at fault.
"""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.runtime.modelgen import (
    TwoInTwoOut,
    export_two_io,
    mlp_module,
    onnx_affine,
    python_echo,
    safetensors_model,
    small_net,
    state_dict_model,
    torchscript_mlp,
    write,
)
from tests.runtime.serverproc import Server, run_to_exit, start_server

# TorchScript is deprecated upstream but is what most Triton repositories hold: the tests build it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

HAVE_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))


def infer(
    server: Server, model: str, arrays: dict[str, np.ndarray], version: str = ""
) -> httpclient.InferResult:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        inputs = []
        for name, array in arrays.items():
            tensor = httpclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer(model, inputs, model_version=version)
    finally:
        client.close()


def metadata(server: Server, model: str) -> dict:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return client.get_model_metadata(model)
    finally:
        client.close()


def run(module: torch.nn.Module, *arrays: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in arrays)).numpy()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    torchscript_mlp(repo, "ts_mlp")
    export_two_io(repo, "pt2_two_io")
    state_dict_model(repo, "sd_net")
    safetensors_model(repo, "st_net")
    if HAVE_ONNX:
        onnx_affine(repo / "onnx_affine" / "1" / "model.onnx")
    # TorchScript whose config names inputs after forward()'s arguments and outputs after dict keys.
    (repo / "ts_named" / "1").mkdir(parents=True)
    torch.jit.script(TwoInTwoOut()).save(str(repo / "ts_named" / "1" / "model.pt"))
    write(
        repo / "ts_named" / "config.pbtxt",
        """
        platform: "pytorch_libtorch"
        max_batch_size: 8
        input [{ name: "b" data_type: TYPE_FP32 dims: [4] }, { name: "a" data_type: TYPE_FP32 dims: [4] }]
        output [{ name: "scaled" data_type: TYPE_FP32 dims: [4] }, { name: "sum" data_type: TYPE_FP32 dims: [4] }]
        dynamic_batching { }
        """,
    )
    python_echo(repo, "py_echo", "FP32")
    # Two versions; the config serves both.
    for version, seed in ((1, 10), (2, 20)):
        (repo / "versioned" / str(version)).mkdir(parents=True)
        torch.jit.trace(mlp_module(seed), torch.zeros(1, 64)).save(
            str(repo / "versioned" / str(version) / "model.pt")
        )
    shutil.copy(repo / "ts_mlp" / "config.pbtxt", repo / "versioned" / "config.pbtxt")
    with (repo / "versioned" / "config.pbtxt").open("a") as config:
        config.write("version_policy: { all { } }\n")
    # A TorchScript file under another name: told apart from a state_dict by its content.
    (repo / "renamed" / "1").mkdir(parents=True)
    shutil.copy(repo / "ts_mlp" / "1" / "model.pt", repo / "renamed" / "1" / "classifier.pth")
    shutil.copy(repo / "ts_mlp" / "config.pbtxt", repo / "renamed" / "config.pbtxt")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(repo, log_dir=tmp_path_factory.mktemp("logs"))
    yield server
    assert server.stop() == 0, server.log()


X64 = np.random.default_rng(11).standard_normal((3, 64)).astype(np.float32)
X8 = np.random.default_rng(12).standard_normal((2, 8)).astype(np.float32)


def test_torchscript(server: Server) -> None:
    y = infer(server, "ts_mlp", {"INPUT__0": X64}).as_numpy("OUTPUT__0")
    np.testing.assert_allclose(y, run(mlp_module(0), X64), rtol=1e-5, atol=1e-6)
    assert metadata(server, "ts_mlp")["platform"] == "pytorch_libtorch"


def test_torchscript_named_by_forward_arguments_and_dict_keys(server: Server) -> None:
    a, b = X64[:2, :4].copy(), X64[:2, 4:8].copy()
    result = infer(server, "ts_named", {"b": b, "a": a})
    np.testing.assert_allclose(result.as_numpy("sum"), a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("scaled"), 2 * a * b, rtol=1e-6)


def test_torch_export_is_introspected(server: Server) -> None:
    a, b = X64[:, :4].copy(), X64[:, 4:8].copy()
    result = infer(server, "pt2_two_io", {"a": a, "b": b})
    np.testing.assert_allclose(result.as_numpy("sum"), a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("scaled"), 2 * a * b, rtol=1e-6)


def test_state_dict_with_model_py_and_model_yaml(server: Server) -> None:
    y = infer(server, "sd_net", {"features": X8}).as_numpy("probabilities")
    np.testing.assert_allclose(y, run(small_net(), X8), rtol=1e-5, atol=1e-6)
    meta = metadata(server, "sd_net")
    assert meta["platform"] == "pytorch_state_dict"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}]


def test_safetensors_with_build_model(server: Server) -> None:
    y = infer(server, "st_net", {"features": X8}).as_numpy("OUTPUT__0")
    np.testing.assert_allclose(y, run(small_net(), X8), rtol=1e-5, atol=1e-6)
    assert metadata(server, "st_net")["platform"] == "pytorch_safetensors"


@pytest.mark.skipif(not HAVE_ONNX, reason="onnx and onnxruntime (the onnx extra) are not installed")
def test_onnx_is_introspected(server: Server, tmp_path: Path) -> None:
    weight, bias = onnx_affine(tmp_path / "same-as-served.onnx")  # same seed, same weights
    x = X8[:, :4].copy()
    y = infer(server, "onnx_affine", {"x": x}).as_numpy("y")
    np.testing.assert_allclose(y, x @ weight + bias, rtol=1e-5, atol=1e-6)
    meta = metadata(server, "onnx_affine")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]


def test_python_model(server: Server) -> None:
    y = infer(server, "py_echo", {"INPUT0": X8}).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(y, X8)
    assert metadata(server, "py_echo")["platform"] == "python"


def test_versions_served_side_by_side(server: Server) -> None:
    assert metadata(server, "versioned")["versions"] == ["1", "2"]
    y1 = infer(server, "versioned", {"INPUT__0": X64}, version="1").as_numpy("OUTPUT__0")
    y2 = infer(server, "versioned", {"INPUT__0": X64}, version="2").as_numpy("OUTPUT__0")
    latest = infer(server, "versioned", {"INPUT__0": X64}).as_numpy("OUTPUT__0")
    np.testing.assert_allclose(y1, run(mlp_module(10), X64), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y2, run(mlp_module(20), X64), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(latest, y2)


def test_model_file_recognised_by_content(server: Server) -> None:
    y = infer(server, "renamed", {"INPUT__0": X64}).as_numpy("OUTPUT__0")
    np.testing.assert_allclose(y, run(mlp_module(0), X64), rtol=1e-5, atol=1e-6)


def test_single_model_file(tmp_path: Path) -> None:
    export_two_io(tmp_path, "src")
    model_file = tmp_path / "src" / "1" / "model.pt2"
    server = start_server(model_file, "--model-name", "adder", log_dir=tmp_path / "logs")
    try:
        meta = metadata(server, "adder")
        assert (meta["name"], meta["versions"]) == ("adder", ["1"])
        a = np.ones((1, 4), dtype=np.float32)
        np.testing.assert_array_equal(infer(server, "adder", {"a": a, "b": a}).as_numpy("sum"), 2 * a)
        assert "model.pt2" in server.log()  # the log says what was loaded and from where
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(not HAVE_ONNX, reason="onnx and onnxruntime (the onnx extra) are not installed")
def test_folder_holding_one_model(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    weight, bias = onnx_affine(folder / "model.onnx")
    server = start_server(folder, "--model-name", "affine", "--model-version", "3", log_dir=tmp_path / "logs")
    try:
        assert metadata(server, "affine")["versions"] == ["3"]
        x = np.ones((2, 4), dtype=np.float32)
        np.testing.assert_allclose(
            infer(server, "affine", {"x": x}, "3").as_numpy("y"), x @ weight + bias, rtol=1e-5
        )
    finally:
        assert server.stop() == 0


def test_override_flags_win_over_config_pbtxt(repo: Path, tmp_path: Path) -> None:
    server = start_server(
        repo,
        "--model-name",
        "ts_mlp",
        "--max-batch-size",
        "4",
        "--max-queue-delay-us",
        "1500",
        "--instances",
        "2",
        log_dir=tmp_path / "logs",
    )
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        config = client.get_model_config("ts_mlp")
        assert config["max_batch_size"] == 4
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1500
        assert [m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"] == [
            "ts_mlp"
        ]
        tensor = httpclient.InferInput("INPUT__0", [5, 64], "FP32")
        tensor.set_data_from_numpy(np.zeros((5, 64), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="max_batch_size 4"):
            client.infer("ts_mlp", [tensor])
        client.close()
        np.testing.assert_allclose(
            infer(server, "ts_mlp", {"INPUT__0": X64[:4]}).as_numpy("OUTPUT__0"),
            run(mlp_module(0), X64[:4]),
            rtol=1e-5,
            atol=1e-6,
        )
    finally:
        assert server.stop() == 0


def test_enabling_batching_on_a_config_that_spells_out_the_batch_dim(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    torchscript_mlp(repo, "mlp")
    write(
        repo / "mlp" / "config.pbtxt",
        """
        max_batch_size: 0
        input [{ name: "INPUT__0" data_type: TYPE_FP32 dims: [-1, 64] }]
        output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [-1, 10] }]
        """,
    )
    server = start_server(repo, "--max-batch-size", "16", log_dir=tmp_path / "logs")
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        config = client.get_model_config("mlp")
        client.close()
        assert config["max_batch_size"] == 16
        assert config["input"][0]["dims"] == [64]
        assert metadata(server, "mlp")["inputs"][0]["shape"] == [-1, 64]
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(("precision", "tolerance"), [("fp16", 2e-2), ("bf16", 8e-2)])
def test_precision(repo: Path, tmp_path: Path, precision: str, tolerance: float) -> None:
    server = start_server(repo, "--model-name", "ts_mlp", "--precision", precision, log_dir=tmp_path / "logs")
    try:
        result = infer(server, "ts_mlp", {"INPUT__0": X64})
        y = result.as_numpy("OUTPUT__0")
        assert y.dtype == np.float32  # the declared output type, whatever the compute type
        np.testing.assert_allclose(y, run(mlp_module(0), X64), atol=tolerance, rtol=tolerance)
        client = httpclient.InferenceServerClient(server.http_url)
        assert client.get_model_config("ts_mlp")["parameters"]["precision"]["string_value"] == precision
        client.close()
    finally:
        assert server.stop() == 0


def test_startup_fails_clearly_when_inputs_cannot_be_known(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    torchscript_mlp(repo, "mlp")
    (repo / "mlp" / "config.pbtxt").unlink()
    code, output = run_to_exit(repo)
    assert code == 1
    assert str(repo / "mlp" / "1" / "model.pt") in output
    assert "config.pbtxt" in output
    assert "model.yaml" in output


def test_startup_fails_clearly_on_a_bad_config(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    torchscript_mlp(repo, "mlp")
    with (repo / "mlp" / "config.pbtxt").open("a") as config:
        config.write("max_batch: 3\n")
    code, output = run_to_exit(repo)
    assert code == 1
    assert f"{repo / 'mlp' / 'config.pbtxt'}:" in output
    assert "max_batch" in output


def test_bad_flags_exit_2_naming_the_flag(tmp_path: Path) -> None:
    code, output = run_to_exit(tmp_path, "--precision", "int4")
    assert code == 2
    assert "--precision" in output
    code, output = run_to_exit(tmp_path, "--max-batch-size", "-1")
    assert code == 2
    assert "--max-batch-size" in output


def fake_aoti_package(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/archive_format", "pt2")
        archive.writestr("model/data/aotinductor/model/abc.wrapper.so", b"\x7fELF not really")


def test_load_errors_name_the_file_and_keep_the_server_serving(tmp_path: Path) -> None:
    """Broken models loaded through the repository API: 400 naming the problem, nothing lost."""
    repo = tmp_path / "repo"
    torchscript_mlp(repo, "good")
    torchscript_mlp(repo, "no_config")
    (repo / "no_config" / "config.pbtxt").unlink()
    state_dict_model(repo, "no_code")
    (repo / "no_code" / "1" / "model.py").unlink()
    fake_aoti_package(repo / "aoti" / "1" / "model.pt2")
    shutil.copy(repo / "good" / "config.pbtxt", repo / "aoti" / "config.pbtxt")
    torchscript_mlp(repo, "wrong_dims")
    text = (repo / "wrong_dims" / "config.pbtxt").read_text().replace("dims: [64]", "dims: [63]")
    (repo / "wrong_dims" / "config.pbtxt").write_text(text)
    torchscript_mlp(repo, "two_files")
    shutil.copy(repo / "two_files" / "1" / "model.pt", repo / "two_files" / "1" / "other.pt")
    shutil.move(repo / "two_files" / "1" / "model.pt", repo / "two_files" / "1" / "first.pt")

    server = start_server(repo, "--model-name", "good", log_dir=tmp_path / "logs")
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        expectations = {
            "no_config": [str(repo / "no_config" / "1" / "model.pt"), "config.pbtxt"],
            "no_code": ["weights.pth", "model.py"],
            "aoti": ["AOTInductor", "model.pt2"],
            "wrong_dims": ["warm-up", "model.pt"],
            "two_files": ["several model files", "first.pt", "other.pt"],
            "missing": ["'missing' not found"],
        }
        for name, fragments in expectations.items():
            with pytest.raises(InferenceServerException) as caught:
                client.load_model(name)
            assert caught.value.status() == "400", name
            for fragment in fragments:
                assert fragment in caught.value.message(), (name, caught.value.message())
            np.testing.assert_allclose(
                infer(server, "good", {"INPUT__0": X64}).as_numpy("OUTPUT__0"),
                run(mlp_module(0), X64),
                rtol=1e-5,
                atol=1e-6,
            )
        assert client.is_server_ready()
    finally:
        client.close()
        assert server.stop() == 0


@pytest.mark.gpu
def test_serves_on_cuda_in_half_precision(repo: Path, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    server = start_server(
        repo, "--model-name", "ts_mlp", "--device", "cuda", "--precision", "fp16", log_dir=tmp_path / "logs"
    )
    try:
        y = infer(server, "ts_mlp", {"INPUT__0": X64}).as_numpy("OUTPUT__0")
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, run(mlp_module(0), X64), atol=2e-2, rtol=2e-2)
        assert "nv_gpu_memory_used_bytes" in "\n".join(server.metrics())
        assert "on cuda:0" in server.log()
    finally:
        assert server.stop() == 0


def test_aoti_package(tmp_path: Path) -> None:
    module = mlp_module(0)
    program = torch.export.export(module, (torch.zeros(2, 64),))
    package = tmp_path / "repo" / "aoti" / "1" / "model.pt2"
    package.parent.mkdir(parents=True)
    torch._inductor.aoti_compile_and_package(program, package_path=str(package))
    write(
        tmp_path / "repo" / "aoti" / "config.pbtxt",
        """
        input [{ name: "INPUT__0" data_type: TYPE_FP32 dims: [2, 64] }]
        output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [2, 10] }]
        """,
    )
    server = start_server(tmp_path / "repo", log_dir=tmp_path / "logs")
    try:
        x = X64[:2].copy()
        y = infer(server, "aoti", {"INPUT__0": x}).as_numpy("OUTPUT__0")
        np.testing.assert_allclose(y, run(module, x), rtol=1e-4, atol=1e-5)
    finally:
        assert server.stop() == 0
