"""The four tritonclient flavours behind one small interface, so each test runs against all of them.

A `Kit` is (client module, tensor mode): http and http.aio in binary (the client's default) and
JSON mode (`binary_data=False`), grpc and grpc.aio (raw contents, the only mode they have). Calls
are written once as `kit.call(lambda client: client.method(...))`: for aio clients the lambda's
coroutine is awaited on a fresh event loop with a fresh client.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

KIT_IDS = ["http-binary", "http-json", "http_aio-binary", "http_aio-json", "grpc", "grpc_aio"]


@dataclass
class Kit:
    name: str
    module: Any
    url: str
    binary: bool
    headers: dict[str, str] | None = None

    @property
    def grpc(self) -> bool:
        return self.name.startswith("grpc")

    @property
    def aio(self) -> bool:
        return "aio" in self.name

    def call(self, fn: Callable[[Any], Any]) -> Any:
        if self.aio:

            async def run() -> Any:
                client = self.module.InferenceServerClient(self.url)
                try:
                    result = fn(client)
                    if inspect.isawaitable(result):
                        result = await result
                    return result
                finally:
                    await client.close()

            return asyncio.run(run())
        client = self.module.InferenceServerClient(self.url)
        try:
            return fn(client)
        finally:
            client.close()

    def inputs(self, arrays: dict[str, np.ndarray], datatypes: dict[str, str] | None = None) -> list[Any]:
        built = []
        for name, array in arrays.items():
            datatype = (datatypes or {}).get(name) or np_to_triton_dtype(array.dtype)
            tensor = self.module.InferInput(name, list(array.shape), datatype)
            if self.grpc:
                tensor.set_data_from_numpy(array)
            else:
                tensor.set_data_from_numpy(array, binary_data=self.binary or datatype == "BF16")
            built.append(tensor)
        return built

    def outputs(self, names: list[str] | None) -> list[Any] | None:
        if names is None:
            return None
        if self.grpc:
            return [self.module.InferRequestedOutput(name) for name in names]
        return [self.module.InferRequestedOutput(name, binary_data=self.binary) for name in names]

    def infer(
        self,
        model: str,
        arrays: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        *,
        datatypes: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        inputs = self.inputs(arrays, datatypes)
        requested = (
            self.outputs(outputs) if outputs is not None else (None if self.binary else self.outputs([]))
        )
        if self.headers:
            kwargs.setdefault("headers", self.headers)
        return self.call(lambda client: client.infer(model, inputs, outputs=requested or None, **kwargs))

    def raises(self, fn: Callable[[Any], Any]) -> InferenceServerException:
        try:
            self.call(fn)
        except InferenceServerException as exc:
            return exc
        raise AssertionError(f"{self.name}: the call succeeded but an error was expected")


def make_kit(kit_id: str, http_url: str, grpc_url: str) -> Kit:
    name, _, mode = kit_id.partition("-")
    module = {"http": httpclient, "http_aio": httpclient_aio, "grpc": grpcclient, "grpc_aio": grpcclient_aio}[
        name
    ]
    return Kit(name, module, grpc_url if name.startswith("grpc") else http_url, binary=mode != "json")


def as_dict(kit: Kit, value: Any) -> dict[str, Any]:
    """Metadata/config/statistics as plain dicts for both transports (gRPC protobuf -> JSON names)."""
    if isinstance(value, dict):
        return value
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(value, preserving_proto_field_name=True)


def status_of(exc: InferenceServerException) -> str:
    """HTTP status ("400") or gRPC status ("StatusCode.INVALID_ARGUMENT") as the client reports it."""
    return str(exc.status())
