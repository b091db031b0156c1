"""OIP v2 over HTTP: JSON tensors and Triton's binary tensor extension, both directions.

A binary request is `<JSON header><input 0 bytes><input 1 bytes>...`, the JSON's length in the
`Inference-Header-Content-Length` header and each binary input's length in its
`parameters.binary_data_size`. Responses mirror it: an output goes binary when its requested
`parameters.binary_data` says so, else when the request's `parameters.binary_data_output` does
(tritonclient sets that when it names no outputs), else as JSON `data`.
Pure functions: no sockets, no models beyond their specs.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelplane_runtime.datatypes import serialize_bytes
from modelplane_runtime.errors import ServeError, Status, invalid
from modelplane_runtime.models import ServedModel, WireTensor


@dataclass(slots=True)
class HttpInferRequest:
    id: str | None
    tensors: list[WireTensor]
    outputs: list[str] | None  # requested output names, None: all
    binary: dict[str, bool]  # per requested output
    binary_default: bool


def _json_object(data: bytes | memoryview, what: str) -> dict[str, Any]:
    try:
        document = json.loads(bytes(data))
    except (ValueError, RecursionError) as exc:
        raise invalid(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise invalid(f"{what} must be a JSON object, got {type(document).__name__}")
    return document


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parameters(container: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = container.get("parameters", {})
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise invalid(f"{where}: 'parameters' must be an object")
    return parameters


def decode_request(body: bytes, header_length: bytes | None) -> HttpInferRequest:
    """Split and validate the request's structure; datatype/shape checks happen in the model."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise invalid(
                f"Inference-Header-Content-Length must be an integer, got {header_length[:40]!r}"
            ) from None
        if length < 0 or length > len(body):
            raise invalid(
                f"Inference-Header-Content-Length {length} does not fit the {len(body)}-byte body "
                f"(truncated request body?)"
            )
        view = memoryview(body)
        document = _json_object(view[:length], "the inference request header")
        binary = view[length:]
    else:
        document = _json_object(body, "the inference request")
        binary = memoryview(b"")

    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise invalid("'id' must be a string")
    parameters = _parameters(document, "request")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise invalid("parameters.binary_data_output must be true or false")
    for key in ("sequence_id", "sequence_start", "sequence_end"):
        if key in parameters and parameters[key] not in (0, "", False):
            raise invalid(f"parameter {key!r}: sequence batching is not supported by this server")

    inputs = document.get("inputs")
    if not isinstance(inputs, list):
        raise invalid("the inference request needs an 'inputs' list")
    tensors: list[WireTensor] = []
    offset = 0
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise invalid(f"inputs[{index}] must be an object")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise invalid(f"inputs[{index}] needs a string 'name'")
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str):
            raise invalid(f"input {name!r} needs a string 'datatype'")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise invalid(
                f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r:.80}"
            )
        tensor_parameters = _parameters(tensor, f"input {name!r}")
        if "shared_memory_region" in tensor_parameters:
            raise invalid(f"input {name!r}: shared memory is not supported by this server")
        size = tensor_parameters.get("binary_data_size")
        data = tensor.get("data")
        raw: memoryview | None = None
        if size is not None:
            if not _is_int(size) or size < 0:
                raise invalid(f"input {name!r}: binary_data_size must be a non-negative integer")
            if data is not None:
                raise invalid(f"input {name!r} has both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise invalid(
                    f"input {name!r} declares binary_data_size {size} but only {len(binary) - offset} bytes of "
                    f"binary data remain (truncated request body?)"
                )
            raw = binary[offset : offset + size]
            offset += size
        elif data is None:
            raise invalid(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        tensors.append((name, datatype, tuple(shape), raw, data))
    if offset != len(binary):
        raise invalid(
            f"{len(binary) - offset} bytes of binary data follow the inputs but no input claims them"
        )

    requested = document.get("outputs")
    names: list[str] | None = None
    flags: dict[str, bool] = {}
    if requested is not None:
        if not isinstance(requested, list):
            raise invalid("'outputs' must be a list")
        names = []
        for index, output in enumerate(requested):
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise invalid(f"outputs[{index}] must be an object with a string 'name'")
            name = output["name"]
            output_parameters = _parameters(output, f"output {name!r}")
            if output_parameters.get("classification"):
                raise invalid(f"output {name!r}: classification is not supported by this server")
            if "shared_memory_region" in output_parameters:
                raise invalid(f"output {name!r}: shared memory is not supported by this server")
            flag = output_parameters.get("binary_data")
            if flag is not None:
                if not isinstance(flag, bool):
                    raise invalid(f"output {name!r}: binary_data must be true or false")
                flags[name] = flag
            names.append(name)
        if not names:
            names = None
    return HttpInferRequest(request_id, tensors, names, flags, binary_default)


def _json_values(array: np.ndarray, name: str) -> list[Any]:
    flat = array.reshape(-1)
    if flat.dtype == object:
        values = []
        for item in flat:
            if isinstance(item, str):
                values.append(item)
                continue
            try:
                values.append(bytes(item).decode("utf-8"))
            except UnicodeDecodeError:
                raise invalid(
                    f"output {name!r} holds bytes that are not UTF-8 text; request it with binary_data"
                ) from None
        return values
    if flat.dtype.kind != "b" and flat.dtype.itemsize == 2 and flat.dtype.kind not in "iu":  # FP16, BF16
        flat = flat.astype(np.float32)
    values_: list[Any] = flat.tolist()
    return values_


def encode_response(
    model: ServedModel, request: HttpInferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, list[bytes | memoryview]]:
    """The JSON header and the binary buffers that follow it (empty when all outputs are JSON)."""
    names = request.outputs if request.outputs is not None else model.output_names
    documents = []
    buffers: list[bytes | memoryview] = []
    for name in names:
        array = outputs[name]
        spec = model.output_specs[name]
        document: dict[str, Any] = {"name": name, "datatype": spec.dtype.name, "shape": list(array.shape)}
        if request.binary.get(name, request.binary_default):
            if spec.dtype.is_bytes:
                data: bytes | memoryview = serialize_bytes(array)
            else:
                data = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
            document["parameters"] = {"binary_data_size": len(data)}
            buffers.append(data)
        else:
            document["data"] = _json_values(array, name)
        documents.append(document)
    header: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version_str,
        "outputs": documents,
    }
    if request.id is not None:
        header["id"] = request.id
    return json.dumps(header, separators=(",", ":")).encode(), buffers


def decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """Undo a request's Content-Encoding (gzip or deflate, zlib-wrapped or raw), at most `limit` bytes."""
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return body
    if name == b"gzip":
        attempts = [zlib.MAX_WBITS | 16]
    elif name == b"deflate":
        attempts = [zlib.MAX_WBITS, -zlib.MAX_WBITS]
    else:
        raise invalid(f"unsupported Content-Encoding {encoding.decode('latin-1')!r} (use gzip or deflate)")
    error: zlib.error | None = None
    for wbits in attempts:
        decoder = zlib.decompressobj(wbits)
        try:
            result = decoder.decompress(body, limit + 1)
        except zlib.error as exc:
            error = exc
            continue
        if len(result) > limit:
            raise ServeError(Status.TOO_LARGE, f"the decompressed request body exceeds {limit} bytes")
        if not decoder.eof:
            raise invalid(f"the {name.decode()} request body is truncated")
        return result
    raise invalid(f"the request body is not valid {name.decode()} data: {error}")


def compress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    else:
        compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def accepted_encoding(header: bytes | None) -> str | None:
    """The first of gzip/deflate the client accepts (q > 0), else None (identity)."""
    if not header:
        return None
    for token in header.decode("latin-1").split(","):
        name, _, params = token.strip().partition(";")
        name = name.strip().lower()
        if name not in ("gzip", "deflate"):
            continue
        quality = params.strip()
        if quality.startswith("q="):
            try:
                if float(quality[2:]) <= 0:
                    continue
            except ValueError:
                continue
        return name
    return None
