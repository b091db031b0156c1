"""ONNX models through onnxruntime (the optional `onnx` extra); also the route for TF/Keras/sklearn.

ONNX graphs declare names, element types and shapes, so no config is needed: a first dimension
that is symbolic on every input and output is taken as the batch dimension.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2

from modelplane_runtime import datatypes
from modelplane_runtime.backends import LoadOptions, RunResult
from modelplane_runtime.config import DEFAULT_MAX_BATCH_SIZE, ModelConfig, TensorSpec
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.repository import VersionFiles

_ONNX_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}


class OnnxBackend:
    format = "onnx"
    platform = "onnxruntime_onnx"
    backend_name = "onnxruntime"

    def __init__(self, files: VersionFiles, options: LoadOptions) -> None:
        self._source = files.model_file
        if options.precision is not None:
            raise ModelLoadError(
                f"{files.model_file}: --precision does not apply to ONNX models; convert the model instead"
            )
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.threads
        session_options.inter_op_num_threads = 1
        providers: list[Any] = ["CPUExecutionProvider"]
        if options.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            device_id = int(options.device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        try:
            self._session: Any = ort.InferenceSession(
                str(files.model_file), session_options, providers=providers
            )
        except Exception as exc:
            raise ModelLoadError(f"{files.model_file}: onnxruntime cannot load it: {exc}") from exc
        self._inputs: tuple[TensorSpec, ...] = ()
        self._output_names: list[str] = []
        self._outputs: tuple[TensorSpec, ...] = ()

    def introspect(self) -> Any:
        tensors = []
        for kind, values in (("input", self._session.get_inputs()), ("output", self._session.get_outputs())):
            for value in values:
                dtype = _ONNX_TYPES.get(value.type)
                if dtype is None:
                    raise ModelLoadError(
                        f"{self._source}: {kind} {value.name!r} has unsupported type {value.type}"
                    )
                shape = value.shape if isinstance(value.shape, list) else None
                tensors.append((kind, value.name, dtype, shape))
        config = ModelConfig()
        batching = all(shape and not isinstance(shape[0], int) for _, _, _, shape in tensors)
        if batching:
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
            config.dynamic_batching.SetInParent()
        for kind, name, dtype, shape in tensors:
            tensor = config.input.add() if kind == "input" else config.output.add()
            tensor.name = name
            tensor.data_type = model_config_pb2.DataType.Value(datatypes.BY_NAME[dtype].config_name)
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in (shape or [-1])]
            tensor.dims.extend(dims[1:] if batching else dims)
        return config

    def bind(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        graph_inputs = {v.name for v in self._session.get_inputs()}
        graph_outputs = {v.name for v in self._session.get_outputs()}
        for kind, specs, names in (("input", inputs, graph_inputs), ("output", outputs, graph_outputs)):
            for spec in specs:
                if spec.name not in names:
                    raise ModelLoadError(
                        f"{self._source}: the config's {kind} {spec.name!r} is not in the ONNX graph "
                        f"(it has {sorted(names)})"
                    )
        self._inputs = inputs
        self._outputs = outputs
        self._output_names = [spec.name for spec in outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> RunResult:
        start = time.perf_counter_ns()
        feed: dict[str, Any] = {}
        for name, array in inputs.items():
            if array.dtype == object:
                array = np.array(
                    [v.decode("utf-8", "replace") for v in array.reshape(-1)], dtype=object
                ).reshape(array.shape)
            feed[name] = array
        results = self._session.run(self._output_names, feed)
        computed = time.perf_counter_ns()
        outputs = {}
        for spec, value in zip(self._outputs, results, strict=True):
            array = np.asarray(value)
            if not spec.dtype.is_bytes and array.dtype != spec.dtype.numpy:
                array = array.astype(spec.dtype.numpy)
            outputs[spec.name] = array
        return outputs, 0, computed - start, time.perf_counter_ns() - computed

    def close(self) -> None:
        self._session = None
