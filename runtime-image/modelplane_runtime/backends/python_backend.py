"""Plain-Python models, KServe-style: a class in model.py with `load()` and `predict()` on numpy dicts.

This is the format for anything torch cannot express (BYTES tensors, pre/post-processing) and
for pure-numpy models. The contract::

    class Model:
        def __init__(self, name: str, version: int, model_dir: str):  # any subset, or none
            ...
        def load(self) -> None:                                       # optional
            ...
        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            ...

Inputs/outputs come from config.pbtxt or model.yaml. `predict` runs on the model's own thread.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np

from modelplane_runtime.backends import LoadOptions, RunResult
from modelplane_runtime.config import TensorSpec
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.repository import VersionFiles
from modelplane_runtime.usercode import import_code


def _model_class(module: Any, where: str) -> type:
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and callable(getattr(obj, "predict", None))
    ]
    if len(classes) > 1:
        named = [c for c in classes if c.__name__ == "Model"]
        classes = named or classes
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "none"
        raise ModelLoadError(
            f"{where}: define one class with a predict(inputs) method (named Model if there are several; found: {found})"
        )
    return classes[0]


class PythonBackend:
    format = "python"
    platform = "python"
    backend_name = "python"

    def __init__(self, files: VersionFiles, options: LoadOptions) -> None:
        self._source = files.model_file
        module = import_code(files.model_file, f"{options.name}_{options.version}")
        cls = _model_class(module, str(files.model_file))
        offered = {
            "name": options.name,
            "version": options.version,
            "model_dir": str(files.model_file.parent),
        }
        parameters = inspect.signature(cls).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
        kwargs = {k: v for k, v in offered.items() if takes_any or k in parameters}
        try:
            self._model = cls(**kwargs)
            load = getattr(self._model, "load", None)
            if callable(load):
                load()
        except Exception as exc:
            raise ModelLoadError(
                f"{files.model_file}: {cls.__name__} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        if inspect.iscoroutinefunction(self._model.predict):
            raise ModelLoadError(
                f"{files.model_file}: predict() must be a plain function; it runs on its own thread"
            )
        if options.precision is not None:
            raise ModelLoadError(f"{files.model_file}: --precision does not apply to python models")
        self._outputs: tuple[TensorSpec, ...] = ()

    def introspect(self) -> Any:
        return None

    def bind(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self._outputs = outputs

    def run(self, inputs: dict[str, np.ndarray]) -> RunResult:
        start = time.perf_counter_ns()
        result = self._model.predict(inputs)
        computed = time.perf_counter_ns()
        if not isinstance(result, dict):
            raise RuntimeError(f"predict() returned {type(result).__name__}, expected a dict of arrays")
        outputs: dict[str, np.ndarray] = {}
        for spec in self._outputs:
            if spec.name not in result:
                raise RuntimeError(
                    f"predict() returned no output {spec.name!r} (it returned {sorted(result)})"
                )
            value = result[spec.name]
            if spec.dtype.is_bytes:
                array = np.asarray(value, dtype=object)
            else:
                array = np.asarray(value)
                if array.dtype != spec.dtype.numpy:
                    array = array.astype(spec.dtype.numpy)
            outputs[spec.name] = array
        return outputs, 0, computed - start, time.perf_counter_ns() - computed

    def close(self) -> None:
        unload = getattr(self._model, "unload", None)
        if callable(unload):
            unload()
