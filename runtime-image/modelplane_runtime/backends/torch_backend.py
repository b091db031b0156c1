"""PyTorch models: torch.export programs, TorchScript, state_dict or safetensors + model.py, AOTInductor.

Nothing here unpickles arbitrary objects: weights go through `torch.load(weights_only=True)` or
safetensors; torch.export and TorchScript archives use their own loaders. `model.py` is code the
model's owner ships on purpose, like Triton's python backend or KServe's custom models.

Tensor naming follows Triton's PyTorch backend: config inputs map to forward()'s arguments by
name, or by position with the `INPUT__0` / `OUTPUT__0` convention; a model returning a dict
maps outputs by key.
"""

from __future__ import annotations

import inspect
import re
import time
import warnings
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch
from tritonclient.grpc import model_config_pb2

from modelplane_runtime import datatypes
from modelplane_runtime.backends import LoadOptions, RunResult
from modelplane_runtime.config import DEFAULT_MAX_BATCH_SIZE, ModelConfig, TensorSpec
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.repository import AOTI, VersionFiles
from modelplane_runtime.usercode import import_code

# Inputs arrive as read-only numpy views of the request bytes; models must not write to their
# inputs, and copying every request to silence this would cost more than it protects.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
warnings.filterwarnings("ignore", message="The given buffer is not writable")

TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
    "BF16": torch.bfloat16,
}
_FROM_TORCH = {v: k for k, v in TORCH_DTYPES.items()}
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_INDEXED = re.compile(r"^.*__(\d+)$")


def to_torch(array: np.ndarray) -> torch.Tensor:
    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _build_module(code_file: Path, unique: str) -> torch.nn.Module:
    module = import_code(code_file, unique)
    builder = getattr(module, "build_model", None)
    if callable(builder):
        built = builder()
        if not isinstance(built, torch.nn.Module):
            raise ModelLoadError(
                f"{code_file}: build_model() returned {type(built).__name__}, not a torch.nn.Module"
            )
        return built
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, torch.nn.Module) and obj.__module__ == module.__name__
    ]
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "none"
        raise ModelLoadError(
            f"{code_file}: define build_model() returning the torch.nn.Module, or exactly one "
            f"nn.Module subclass constructible without arguments (found: {found})"
        )
    try:
        return classes[0]()
    except TypeError as exc:
        raise ModelLoadError(
            f"{code_file}: {classes[0].__name__}() needs arguments; define build_model()"
        ) from exc


def _state_dict(files: VersionFiles, device: str) -> dict[str, torch.Tensor]:
    path = files.model_file
    try:
        if files.format == "safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device=device)
        else:
            loaded = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    if isinstance(loaded, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelLoadError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return loaded


def _fake_shape(value: Any) -> tuple[list[int], list[str]]:
    """A traced tensor's shape with symbolic dims as -1, and the symbols' names."""
    dims, symbols = [], []
    for dim in value.shape:
        if isinstance(dim, int):
            dims.append(dim)
            symbols.append("")
        else:
            dims.append(-1)
            symbols.append(str(dim))
    return dims, symbols


class TorchBackend:
    backend_name = "pytorch"

    def __init__(self, files: VersionFiles, options: LoadOptions) -> None:
        self.format = files.format
        self.platform = {
            "torchscript": "pytorch_libtorch",
            "torch-export": "torch_export",
            AOTI: "torch_aoti",
            "state-dict": "pytorch_state_dict",
            "safetensors": "pytorch_safetensors",
        }[files.format]
        self._files = files
        self._device = torch.device(options.device)
        self._cuda = self._device.type == "cuda"
        self._compute_dtype: torch.dtype | None = None
        self._arg_names: list[str] | None = None
        self._exported: Any = None
        unique = f"{options.name}_{options.version}"
        path = files.model_file
        try:
            if files.format == "torch-export":
                self._exported = torch.export.load(str(path))
                self._arg_names = list(self._exported.graph_signature.user_inputs)
                module: Any = self._exported.module().to(self._device)
            elif files.format == "torchscript":
                module = torch.jit.load(str(path), map_location=self._device).eval()
                self._arg_names = [a.name for a in module.forward.schema.arguments[1:]]
            elif files.format == AOTI:
                module = self._load_aoti(path, options)
            else:
                assert files.code_file is not None
                module = _build_module(files.code_file, unique)
                module.load_state_dict(_state_dict(files, options.device), strict=True)
                module = module.to(self._device).eval()
                self._arg_names = [
                    p.name
                    for p in inspect.signature(module.forward).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"{path}: cannot load {files.format} model: {type(exc).__name__}: {exc}"
            ) from exc
        if options.precision is not None:
            if files.format == AOTI:
                raise ModelLoadError(
                    f"{path}: an AOTInductor package is compiled for its precision; "
                    f"--precision {options.precision} cannot change it"
                )
            self._compute_dtype = PRECISIONS[options.precision]
            module = module.to(self._compute_dtype)
        self._module = module
        self._order: list[str | None] = []
        self._output_index: list[int] = []
        self._outputs: tuple[TensorSpec, ...] = ()

    def _load_aoti(self, path: Path, options: LoadOptions) -> Any:
        loader = getattr(torch._inductor, "aoti_load_package", None)
        if loader is None:
            raise ModelLoadError(f"{path}: this torch build cannot load AOTInductor packages")
        try:
            runner = loader(str(path))
        except Exception as exc:
            raise ModelLoadError(
                f"{path} is an AOTInductor package (compiled code, not a torch.export program) and "
                f"could not be loaded here: {type(exc).__name__}: {exc}. Build it for this platform, "
                f"or export with torch.export.save() instead"
            ) from exc
        compiled_for = runner.get_metadata().get("AOTI_DEVICE_KEY", "cpu")
        if compiled_for != self._device.type:
            raise ModelLoadError(
                f"{path}: AOTInductor package compiled for {compiled_for}, but the server runs on {self._device}"
            )
        return runner

    def introspect(self) -> Any:
        """torch.export programs carry names, dtypes and (symbolic) shapes; the others do not."""
        if self._exported is None:
            return None
        program = self._exported
        nodes = {node.name: node for node in program.graph.nodes}
        user_outputs = list(program.graph_signature.user_outputs)
        out_spec = program.call_spec.out_spec
        output_names = [f"OUTPUT__{i}" for i in range(len(user_outputs))]
        if out_spec is not None and out_spec.type is dict and len(out_spec.context) == len(user_outputs):
            output_names = [str(key) for key in out_spec.context]
        tensors = []
        for kind, names, node_names in (
            ("input", list(program.graph_signature.user_inputs), list(program.graph_signature.user_inputs)),
            ("output", output_names, user_outputs),
        ):
            for name, node_name in zip(names, node_names, strict=True):
                value = nodes[node_name].meta.get("val") if node_name in nodes else None
                if not isinstance(value, torch.Tensor) or value.dtype not in _FROM_TORCH:
                    return None
                dims, symbols = _fake_shape(value)
                tensors.append((kind, name, _FROM_TORCH[value.dtype], dims, symbols))
        config = ModelConfig()
        # Batch when every tensor's first dimension is the same free symbol.
        firsts = {t[4][0] if t[4] else "" for t in tensors}
        batching = len(firsts) == 1 and "" not in firsts
        if batching:
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
            config.dynamic_batching.SetInParent()
        for kind, name, dtype_name, dims, _ in tensors:
            tensor = config.input.add() if kind == "input" else config.output.add()
            tensor.name = name
            tensor.data_type = model_config_pb2.DataType.Value(datatypes.BY_NAME[dtype_name].config_name)
            tensor.dims.extend(dims[1:] if batching else dims)
        return config

    def bind(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        source = self._files.model_file
        for spec in (*inputs, *outputs):
            if spec.dtype.is_bytes:
                raise ModelLoadError(
                    f"{source}: {spec.name!r} is BYTES, which torch models cannot take or return"
                )
        names = [spec.name for spec in inputs]
        indexed = [_INDEXED.match(n) for n in names]
        if self._arg_names is not None and all(n in self._arg_names for n in names):
            last = max(self._arg_names.index(n) for n in names)
            self._order = [n if n in names else None for n in self._arg_names[: last + 1]]
            missing = [a for a, n in zip(self._arg_names, self._order, strict=False) if n is None]
            if missing and self.format != "state-dict":
                raise ModelLoadError(
                    f"{source}: forward({', '.join(self._arg_names)}) takes {missing} but the config declares "
                    f"no such input"
                )
        elif all(indexed):
            positions = {int(m.group(1)): n for m, n in zip(indexed, names, strict=True) if m}
            if len(positions) != len(names):
                raise ModelLoadError(f"{source}: inputs {names} repeat an __<index>")
            self._order = [positions.get(i) for i in range(max(positions) + 1)]
        elif self._arg_names is not None:
            raise ModelLoadError(
                f"{source}: config inputs {names} match neither forward()'s arguments "
                f"{self._arg_names} nor the INPUT__<index> convention"
            )
        else:
            self._order = list(names)
        self._outputs = outputs
        self._output_index = []
        for position, spec in enumerate(outputs):
            match = _INDEXED.match(spec.name)
            self._output_index.append(int(match.group(1)) if match else position)

    def run(self, inputs: dict[str, np.ndarray]) -> RunResult:
        start = time.perf_counter_ns()
        device, cast = self._device, self._compute_dtype
        args: list[torch.Tensor | None] = []
        for name in self._order:
            array = inputs.get(name) if name is not None else None
            if array is None:
                args.append(None)
                continue
            tensor = to_torch(array)
            if cast is not None and tensor.is_floating_point():
                tensor = tensor.to(cast)
            if self._cuda:
                tensor = tensor.to(device, non_blocking=True)
            args.append(tensor)
        moved = time.perf_counter_ns()
        with torch.inference_mode():
            result = self._module(*args)
        if self._cuda:
            torch.cuda.synchronize(device)
        computed = time.perf_counter_ns()
        outputs = self._collect(result)
        return outputs, moved - start, computed - moved, time.perf_counter_ns() - computed

    def _collect(self, result: Any) -> dict[str, np.ndarray]:
        outputs: dict[str, np.ndarray] = {}
        if isinstance(result, dict):
            for spec in self._outputs:
                if spec.name not in result:
                    raise RuntimeError(
                        f"the model returned no output {spec.name!r} (it returned {sorted(result)})"
                    )
                outputs[spec.name] = self._convert(result[spec.name], spec)
            return outputs
        sequence = [result] if isinstance(result, torch.Tensor) else list(result)
        for spec, index in zip(self._outputs, self._output_index, strict=True):
            if index >= len(sequence):
                raise RuntimeError(
                    f"the model returned {len(sequence)} output(s) but the config expects {spec.name!r} "
                    f"at position {index}"
                )
            outputs[spec.name] = self._convert(sequence[index], spec)
        return outputs

    @staticmethod
    def _convert(value: Any, spec: TensorSpec) -> np.ndarray:
        if not isinstance(value, torch.Tensor):
            raise RuntimeError(f"output {spec.name!r} is a {type(value).__name__}, not a tensor")
        target = TORCH_DTYPES[spec.dtype.name]
        if value.dtype != target:
            value = value.to(target)
        return to_numpy(value)

    def close(self) -> None:
        self._module = None
        if self._cuda:
            torch.cuda.empty_cache()
