"""Model configuration: Triton's `ModelConfig` message, read from config.pbtxt or model.yaml.

The message class is the one `tritonclient.grpc` ships, so the config we parse is byte-for-byte
what the gRPC ModelConfig RPC returns and what Triton users already write. Operator settings
(`--max-batch-size`, `--max-queue-delay-us`) are applied on top with Triton's batching semantics:
`dims` never include the batch dimension when `max_batch_size > 0`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2

from modelplane_runtime import datatypes
from modelplane_runtime.datatypes import DataType
from modelplane_runtime.errors import ModelLoadError

ModelConfig = model_config_pb2.ModelConfig

# When a model declares no batching limit of its own but can batch (dim 0 is dynamic).
DEFAULT_MAX_BATCH_SIZE = 32


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input or output as requests see it: `shape` has -1 in front when the model batches."""

    name: str
    dtype: DataType
    dims: tuple[int, ...]
    shape: tuple[int, ...]
    optional: bool = False
    reshape: tuple[int, ...] | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.dtype.name, "shape": list(self.shape)}


def read_config_pbtxt(path: Path) -> Any:
    """Parse a Triton config.pbtxt; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as exc:
        raise ModelLoadError(f"{path}:{exc}") from exc


def read_model_yaml(path: Path) -> Any:
    """A small YAML form of ModelConfig (same field names) with `inputs`/`outputs`/`datatype` aliases.

    Example::

        max_batch_size: 32
        inputs:  [{name: x, datatype: FP32, dims: [64]}]
        outputs: [{name: y, datatype: FP32, dims: [10]}]
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelLoadError(
            f"{path}: expected a mapping with inputs and outputs, got {type(document).__name__}"
        )
    return config_from_dict(document, str(path))


def config_from_json(text: str, source: str) -> Any:
    """A ModelConfig in Triton's JSON form (what `load_model(config=...)` sends)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{source}: invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelLoadError(f"{source}: expected a JSON object")
    return config_from_dict(document, source)


def config_from_dict(document: dict[str, Any], source: str) -> Any:
    document = dict(document)
    for alias, field in (("inputs", "input"), ("outputs", "output")):
        if alias in document:
            if field in document:
                raise ModelLoadError(f"{source}: give either {alias!r} or {field!r}, not both")
            document[field] = document.pop(alias)
    for field in ("input", "output"):
        tensors = document.get(field) or []
        if not isinstance(tensors, list):
            raise ModelLoadError(f"{source}: {field!r} must be a list")
        document[field] = [_normalize_tensor(t, f"{source}: {field}[{i}]") for i, t in enumerate(tensors)]
    try:
        return json_format.ParseDict(document, ModelConfig())
    except json_format.ParseError as exc:
        raise ModelLoadError(f"{source}: {exc}") from exc


def _normalize_tensor(tensor: Any, where: str) -> dict[str, Any]:
    if not isinstance(tensor, dict):
        raise ModelLoadError(f"{where}: expected a mapping with name, datatype and dims")
    tensor = dict(tensor)
    if "datatype" in tensor:
        tensor["data_type"] = tensor.pop("datatype")
    if "data_type" in tensor:
        try:
            tensor["data_type"] = datatypes.from_config_name(str(tensor["data_type"])).config_name
        except ValueError as exc:
            raise ModelLoadError(f"{where}: {exc}") from exc
    return tensor


def validate(config: Any, source: str) -> None:
    """Reject configs we would serve wrongly; every message names the source and the field."""
    if config.max_batch_size < 0:
        raise ModelLoadError(f"{source}: max_batch_size must be >= 0, got {config.max_batch_size}")
    if not config.input:
        raise ModelLoadError(f"{source}: the model declares no inputs")
    if not config.output:
        raise ModelLoadError(f"{source}: the model declares no outputs")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            where = f"{source}: {kind} {tensor.name!r}"
            if not tensor.name:
                raise ModelLoadError(f"{source}: an {kind} has no name")
            if tensor.name in seen:
                raise ModelLoadError(f"{where} is declared twice")
            seen.add(tensor.name)
            if tensor.data_type == model_config_pb2.TYPE_INVALID:
                raise ModelLoadError(f"{where} has no data_type")
            if any(d < -1 or d == 0 for d in tensor.dims):
                raise ModelLoadError(f"{where}: dims must be positive or -1, got {list(tensor.dims)}")
            if tensor.HasField("reshape") and any(d < -1 or d == 0 for d in tensor.reshape.shape):
                raise ModelLoadError(f"{where}: reshape dims must be positive or -1")
            if getattr(tensor, "is_shape_tensor", False):
                raise ModelLoadError(f"{where}: shape tensors are not supported")
    if config.HasField("sequence_batching") or config.HasField("ensemble_scheduling"):
        raise ModelLoadError(f"{source}: sequence batching and ensembles are not supported")


def apply_overrides(
    config: Any,
    *,
    name: str,
    max_batch_size: int | None,
    max_queue_delay_us: int | None,
    source: str,
) -> Any:
    """Operator settings win over the repository's config (a copy is returned)."""
    result = ModelConfig()
    result.CopyFrom(config)
    result.name = name
    if max_batch_size is not None and max_batch_size != result.max_batch_size:
        if max_batch_size < 0:
            raise ModelLoadError(f"--max-batch-size must be >= 0, got {max_batch_size}")
        if result.max_batch_size == 0:
            # The config spelled the batch dimension out; it must be variable to batch on it.
            for tensor in [*result.input, *result.output]:
                if not tensor.dims or tensor.dims[0] != -1:
                    raise ModelLoadError(
                        f"{source}: cannot batch model {name!r} with --max-batch-size {max_batch_size}: "
                        f"its config has max_batch_size 0 and {tensor.name!r} has dims {list(tensor.dims)} "
                        f"(the first dimension must be -1 to batch on it)"
                    )
            for tensor in [*result.input, *result.output]:
                del tensor.dims[0]
        elif max_batch_size == 0:
            for tensor in [*result.input, *result.output]:
                tensor.dims.insert(0, -1)
        result.max_batch_size = max_batch_size
        if max_batch_size > 0:
            result.dynamic_batching.SetInParent()
    if max_queue_delay_us is not None:
        if max_queue_delay_us < 0:
            raise ModelLoadError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")
        result.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    return result


def tensor_specs(config: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    batching = config.max_batch_size > 0

    def spec(tensor: Any, optional: bool) -> TensorSpec:
        dims = tuple(int(d) for d in tensor.dims)
        reshape = tuple(int(d) for d in tensor.reshape.shape) if tensor.HasField("reshape") else None
        return TensorSpec(
            name=tensor.name,
            dtype=datatypes.BY_CONFIG_NAME[model_config_pb2.DataType.Name(tensor.data_type)],
            dims=dims,
            shape=((-1, *dims) if batching else dims),
            optional=optional,
            reshape=reshape,
        )

    inputs = tuple(spec(t, t.optional) for t in config.input)
    outputs = tuple(spec(t, False) for t in config.output)
    return inputs, outputs


def select_versions(config: Any, available: list[int], requested: str | None, where: str) -> list[int]:
    """The versions to serve: `--model-version` if given, else the config's version_policy."""
    if not available:
        raise ModelLoadError(f"{where}: no version folders (expected {where}/<version>/model.*)")
    if requested:
        try:
            version = int(requested)
        except ValueError:
            raise ModelLoadError(f"--model-version must be a positive integer, got {requested!r}") from None
        if version not in available:
            found = ", ".join(str(v) for v in sorted(available))
            raise ModelLoadError(f"{where}: version {version} not found (found versions: {found})")
        return [version]
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return sorted(available)
    if choice == "specific":
        missing = [v for v in policy.specific.versions if v not in available]
        if missing:
            raise ModelLoadError(f"{where}: version_policy names versions {missing} that do not exist")
        return sorted(int(v) for v in policy.specific.versions)
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
    return sorted(available)[-count:]


_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def config_to_json(config: Any) -> dict[str, Any]:
    """Triton's JSON form of ModelConfig: proto field names, every field, 64-bit ints as numbers."""
    document = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _int64_to_numbers(config.DESCRIPTOR, document)
    return document


def _int64_to_numbers(descriptor: Descriptor, document: dict[str, Any]) -> None:
    for field in descriptor.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            value_field = message.fields_by_name["value"]
            for key, item in value.items():
                if value_field.message_type is not None:
                    _int64_to_numbers(value_field.message_type, item)
                elif value_field.type in _INT64:
                    value[key] = int(item)
        elif message is not None:
            for item in value if field.is_repeated else [value]:
                _int64_to_numbers(message, item)
        elif field.type in _INT64:
            document[field.name] = [int(v) for v in value] if field.is_repeated else int(value)
