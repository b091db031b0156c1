"""The Open Inference Protocol datatypes and their numpy, model-config and wire forms.

One table, so the HTTP codec, the gRPC codec, config parsing and the model backends can never
disagree on what "BF16" or "TYPE_STRING" means. BF16 uses `ml_dtypes.bfloat16`, the numpy type
tritonclient itself uses (numpy has none).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np


@dataclass(frozen=True, slots=True)
class DataType:
    """One protocol datatype. `itemsize` is 0 for BYTES (variable-length elements)."""

    name: str  # protocol name: "FP32"
    config_name: str  # ModelConfig enum name: "TYPE_FP32"
    numpy: np.dtype[Any]
    itemsize: int
    # Which InferTensorContents field carries it over gRPC; None: raw contents only (FP16, BF16).
    grpc_contents_field: str | None

    @property
    def is_bytes(self) -> bool:
        return self.itemsize == 0

    @property
    def is_float(self) -> bool:
        return self.name in ("FP16", "FP32", "FP64", "BF16")


def _dt(name: str, config: str, np_dtype: Any, contents: str | None) -> DataType:
    dtype = np.dtype(np_dtype)
    itemsize = 0 if dtype == np.dtype(object) else dtype.itemsize
    return DataType(name, config, dtype, itemsize, contents)


_ALL = [
    _dt("BOOL", "TYPE_BOOL", np.bool_, "bool_contents"),
    _dt("INT8", "TYPE_INT8", np.int8, "int_contents"),
    _dt("INT16", "TYPE_INT16", np.int16, "int_contents"),
    _dt("INT32", "TYPE_INT32", np.int32, "int_contents"),
    _dt("INT64", "TYPE_INT64", np.int64, "int64_contents"),
    _dt("UINT8", "TYPE_UINT8", np.uint8, "uint_contents"),
    _dt("UINT16", "TYPE_UINT16", np.uint16, "uint_contents"),
    _dt("UINT32", "TYPE_UINT32", np.uint32, "uint_contents"),
    _dt("UINT64", "TYPE_UINT64", np.uint64, "uint64_contents"),
    _dt("FP16", "TYPE_FP16", np.float16, None),
    _dt("FP32", "TYPE_FP32", np.float32, "fp32_contents"),
    _dt("FP64", "TYPE_FP64", np.float64, "fp64_contents"),
    _dt("BF16", "TYPE_BF16", ml_dtypes.bfloat16, None),
    _dt("BYTES", "TYPE_STRING", object, "bytes_contents"),
]

BY_NAME: dict[str, DataType] = {dt.name: dt for dt in _ALL}
BY_CONFIG_NAME: dict[str, DataType] = {dt.config_name: dt for dt in _ALL}
_BY_NUMPY: dict[np.dtype[Any], DataType] = {dt.numpy: dt for dt in _ALL}
NAMES = tuple(BY_NAME)


def from_numpy(dtype: np.dtype[Any]) -> DataType:
    """The protocol datatype of a numpy dtype; strings and bytes arrays are BYTES."""
    found = _BY_NUMPY.get(dtype)
    if found is not None:
        return found
    if dtype.kind in ("S", "U", "O"):
        return BY_NAME["BYTES"]
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def from_config_name(name: str) -> DataType:
    """`TYPE_FP32` (the ModelConfig spelling) or `FP32` (the protocol spelling)."""
    found = BY_CONFIG_NAME.get(name) or BY_NAME.get(name)
    if found is None:
        known = ", ".join(dt.config_name for dt in _ALL)
        raise ValueError(f"unknown datatype {name!r} (expected one of {known})")
    return found


_LENGTH = struct.Struct("<I")


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES wire form: each element as <uint32 little-endian length><bytes>, row-major."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, count: int, what: str) -> np.ndarray:
    """Parse exactly `count` length-prefixed elements filling `buffer`; errors say which tensor."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset, end = 0, len(view)
    for index in range(count):
        if offset + 4 > end:
            raise ValueError(
                f"{what}: BYTES data ends after {index} of {count} elements "
                f"(each element needs a 4-byte length prefix)"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise ValueError(
                f"{what}: BYTES element {index} declares {length} bytes but only {end - offset} remain"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != end:
        raise ValueError(
            f"{what}: {end - offset} bytes left over after {count} BYTES elements (shape and data disagree)"
        )
    result = np.empty(count, dtype=object)
    result[:] = items
    return result


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count
