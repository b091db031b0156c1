"""Model backends: each format loads into an object that runs numpy dicts in, numpy dicts out.

A backend's `run` is called on the model instance's own executor thread (never on the event
loop) with inputs already validated against the config; it returns every declared output in the
declared datatype plus the time spent moving inputs in, computing, and moving outputs out, which
feed Triton's compute_input / compute_infer / compute_output statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelplane_runtime.config import TensorSpec
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.repository import AOTI, VersionFiles


@dataclass(frozen=True)
class LoadOptions:
    name: str
    version: int
    device: str  # "cpu" or "cuda:N"
    precision: str | None  # None: as saved; else "fp32" | "fp16" | "bf16"
    threads: int


RunResult = tuple[dict[str, np.ndarray], int, int, int]


class Backend(Protocol):
    format: str
    platform: str  # Triton's platform string, reported in metadata and config
    backend_name: str  # Triton's backend string

    def introspect(self) -> Any:
        """A ModelConfig with inputs/outputs (and max_batch_size) if the model can tell, else None."""
        ...

    def bind(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        """Check the config's tensors against the model and prepare the call; ModelLoadError if not."""
        ...

    def run(self, inputs: dict[str, np.ndarray]) -> RunResult: ...

    def close(self) -> None: ...


def open_backend(files: VersionFiles, options: LoadOptions) -> Backend:
    """Load the model file; imports the heavy libraries only for the format in use."""
    if files.format == "python":
        from modelplane_runtime.backends.python_backend import PythonBackend

        return PythonBackend(files, options)
    if files.format == "onnx":
        try:
            from modelplane_runtime.backends.onnx_backend import OnnxBackend
        except ImportError as exc:
            raise ModelLoadError(
                f"{files.model_file}: ONNX models need onnxruntime (install modelplane[onnx]): {exc}"
            ) from exc
        return OnnxBackend(files, options)
    if files.format in ("torch-export", "torchscript", "state-dict", "safetensors", AOTI):
        from modelplane_runtime.backends.torch_backend import TorchBackend

        return TorchBackend(files, options)
    raise ModelLoadError(f"{files.model_file}: unknown model format {files.format!r}")
