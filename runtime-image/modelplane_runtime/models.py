"""Served models: validation of requests against a model's config, and the registry of loaded models.

Both front ends decode their wire format into (name, datatype, shape, raw bytes | values) and
hand it to `ServedModel.prepare`, so every check and every error message exists once. Loading
runs on a separate thread; a failed (re)load leaves whatever was serving untouched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2

from modelplane_runtime import __version__, repository
from modelplane_runtime import config as configs
from modelplane_runtime.backends import Backend, LoadOptions, open_backend
from modelplane_runtime.batching import Scheduler, warm_up
from modelplane_runtime.config import ModelConfig, TensorSpec
from modelplane_runtime.datatypes import BY_CONFIG_NAME, DataType, deserialize_bytes, element_count
from modelplane_runtime.errors import ModelLoadError, ServeError, Status, invalid, not_found, unavailable
from modelplane_runtime.options import ServeOptions
from modelplane_runtime.stats import ModelStats

log = logging.getLogger("modelplane.runtime")

SERVER_NAME = "modelplane"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]

# (name, datatype, shape, raw bytes or None, decoded values or None)
WireTensor = tuple[str, str, tuple[int, ...], bytes | memoryview | None, Any]


def _values_to_array(spec: TensorSpec, values: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    """JSON `data` (flat or nested) or gRPC typed contents, checked against the datatype."""
    dtype = spec.dtype
    count = element_count(shape)
    if dtype.is_bytes:
        flat = _flatten(values, where)
        items: list[bytes] = []
        for item in flat:
            if isinstance(item, str):
                items.append(item.encode("utf-8"))
            elif isinstance(item, bytes):
                items.append(item)
            else:
                raise invalid(f"{where}: BYTES data must be strings, got {type(item).__name__}")
        array = np.empty(len(items), dtype=object)
        array[:] = items
    else:
        try:
            array = np.asarray(values)
        except (ValueError, TypeError) as exc:
            raise invalid(f"{where}: data is not a regular (non-ragged) array of numbers: {exc}") from None
        kind = array.dtype.kind
        if array.size:
            if dtype.name == "BOOL":
                if kind != "b":
                    raise invalid(f"{where}: BOOL data must be true/false, got {array.dtype.name} values")
            elif dtype.numpy.kind in "iu":
                if kind in "fO":
                    # numpy turns a mix of large and small Python ints into float64 or object:
                    # convert exact Python ints directly (an overflow raises).
                    flat = _flatten(values, where)
                    if not all(type(v) is int for v in flat):
                        raise invalid(f"{where}: {dtype.name} data must be integers, got {_kind_name(kind)}")
                    try:
                        array = np.array(flat, dtype=dtype.numpy)
                    except OverflowError:
                        info = np.iinfo(dtype.numpy)
                        raise invalid(
                            f"{where}: a value is out of range for {dtype.name} [{info.min}, {info.max}]"
                        ) from None
                    kind = array.dtype.kind
                if kind not in "iu":
                    raise invalid(f"{where}: {dtype.name} data must be integers, got {_kind_name(kind)}")
                info = np.iinfo(dtype.numpy)
                if array.min() < info.min or array.max() > info.max:
                    raise invalid(
                        f"{where}: a value is out of range for {dtype.name} [{info.min}, {info.max}]"
                    )
            elif kind not in "iuf":
                raise invalid(f"{where}: {dtype.name} data must be numbers, got {_kind_name(kind)}")
        array = array.astype(dtype.numpy)
    if array.size != count:
        raise invalid(f"{where}: {array.size} values given, shape {list(shape)} needs {count}")
    return _reshaped(array, shape, where)


def _reshaped(array: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        return array.reshape(shape)
    except ValueError as exc:  # e.g. a zero-size shape whose other dims overflow numpy's limits
        raise invalid(f"{where}: shape {list(shape)} cannot be represented: {exc}") from None


def _kind_name(kind: str) -> str:
    return {
        "U": "strings",
        "S": "strings",
        "O": "mixed or out-of-range values",
        "f": "floats",
        "b": "booleans",
    }.get(kind, "other values")


def _flatten(values: Any, where: str) -> list[Any]:
    if not isinstance(values, list | tuple) and not hasattr(values, "__len__"):
        raise invalid(f"{where}: data must be a list")
    flat: list[Any] = []
    stack = [iter(values)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _raw_to_array(
    spec: TensorSpec, raw: bytes | memoryview, shape: tuple[int, ...], where: str
) -> np.ndarray:
    dtype = spec.dtype
    count = element_count(shape)
    if dtype.is_bytes:
        try:
            array = deserialize_bytes(raw, count, where)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return _reshaped(array, shape, where)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise invalid(
            f"{where}: {len(raw)} bytes of data, but shape {list(shape)} of {dtype.name} needs {expected} bytes"
        )
    return _reshaped(np.frombuffer(raw, dtype=dtype.numpy), shape, where)


class ServedModel:
    """One loaded version of a model: its config, validation, scheduler and statistics."""

    def __init__(
        self,
        name: str,
        version: int,
        config: Any,
        backend: Backend,
        source: Path,
        instances: int,
        device: str,
        precision: str | None,
    ) -> None:
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.config_json = configs.config_to_json(config)
        self.backend = backend
        self.source = source
        self.device = device
        self.precision = precision
        self.inputs, self.outputs = configs.tensor_specs(config)
        self.input_specs = {spec.name: spec for spec in self.inputs}
        self.output_specs = {spec.name: spec for spec in self.outputs}
        self.output_names = [spec.name for spec in self.outputs]
        self.required_inputs = [spec.name for spec in self.inputs if not spec.optional]
        self.max_batch_size = int(config.max_batch_size)
        self.dynamic_batching = self.max_batch_size > 0 and config.HasField("dynamic_batching")
        # Requests can only be stacked blindly when no input has variable non-batch dims.
        self._uniform = not any(
            spec.optional or -1 in (spec.reshape if spec.reshape is not None else spec.dims)
            for spec in self.inputs
        )
        self.stats = ModelStats()
        batching = config.dynamic_batching
        self.scheduler = Scheduler(
            f"{name}-{version}",
            backend.run,
            self.stats,
            max_rows=self.max_batch_size if self.dynamic_batching else 0,
            delay_us=int(batching.max_queue_delay_microseconds),
            instances=instances,
            max_queue=int(batching.default_queue_policy.max_queue_size),
        )
        self.instances = instances

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version_str],
            "platform": self.backend.platform,
            "inputs": [spec.describe() for spec in self.inputs],
            "outputs": [spec.describe() for spec in self.outputs],
        }

    def prepare(self, tensors: Iterable[WireTensor]) -> tuple[dict[str, np.ndarray], int, Hashable]:
        """Validate and decode a request's inputs; returns (arrays, batch rows, batching key)."""
        arrays: dict[str, np.ndarray] = {}
        rows = -1
        batching = self.max_batch_size > 0
        for name, datatype, shape, raw, values in tensors:
            spec = self.input_specs.get(name)
            if spec is None:
                raise invalid(
                    f"unexpected inference input {name!r} for model {self.name!r} "
                    f"(it takes: {', '.join(self.input_specs)})"
                )
            if name in arrays:
                raise invalid(f"input {name!r} is given twice")
            where = f"input {name!r} of model {self.name!r}"
            if datatype != spec.dtype.name:
                raise invalid(f"unexpected datatype {datatype} for {where}, expecting {spec.dtype.name}")
            expected = spec.shape
            if len(shape) != len(expected) or any(
                e != -1 and s != e for s, e in zip(shape, expected, strict=True)
            ):
                raise invalid(f"unexpected shape {list(shape)} for {where}, expecting {list(expected)}")
            if batching:
                if rows == -1:
                    rows = shape[0]
                    if rows < 1 or rows > self.max_batch_size:
                        raise invalid(
                            f"batch size {rows} of {where} must be between 1 and the model's "
                            f"max_batch_size {self.max_batch_size}"
                        )
                elif shape[0] != rows:
                    raise invalid(f"{where} has batch size {shape[0]} but other inputs have {rows}")
            if raw is not None:
                array = _raw_to_array(spec, raw, shape, where)
            elif values is not None:
                array = _values_to_array(spec, values, shape, where)
            else:
                raise invalid(f"{where} has no data (give data, binary_data_size, or raw contents)")
            if spec.reshape is not None:
                target = (rows, *spec.reshape) if batching else spec.reshape
                try:
                    array = array.reshape(target)
                except ValueError:
                    raise invalid(
                        f"{where}: shape {list(shape)} cannot be reshaped to {list(target)}"
                    ) from None
            arrays[name] = array
        if len(arrays) < len(self.required_inputs):
            missing = [n for n in self.required_inputs if n not in arrays]
            raise invalid(f"model {self.name!r} expects input(s) {missing} that the request does not have")
        key: Hashable = None
        if not self._uniform:
            key = tuple(sorted((name, array.shape[1:]) for name, array in arrays.items()))
        return arrays, max(rows, 0), key

    def check_outputs(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.output_specs:
                raise invalid(
                    f"unexpected inference output {name!r} for model {self.name!r} "
                    f"(it has: {', '.join(self.output_specs)})"
                )

    async def execute(
        self, inputs: dict[str, np.ndarray], rows: int, key: Hashable, start_ns: int
    ) -> dict[str, np.ndarray]:
        try:
            outputs = await self.scheduler.submit(inputs, rows, key)
        except ServeError as exc:
            self.stats.failed(
                time.perf_counter_ns() - start_ns, "REJECTED" if exc.status is Status.UNAVAILABLE else "OTHER"
            )
            raise
        except asyncio.CancelledError:
            self.stats.failed(time.perf_counter_ns() - start_ns, "CANCELED")
            raise
        except Exception as exc:
            self.stats.failed(time.perf_counter_ns() - start_ns, "BACKEND")
            log.warning(
                "model %r version %s failed: %s: %s", self.name, self.version, type(exc).__name__, exc
            )
            raise ServeError(
                Status.INTERNAL,
                f"model {self.name!r} version {self.version} failed: {type(exc).__name__}: {exc}",
            ) from exc
        self.stats.succeeded(time.perf_counter_ns() - start_ns, rows or 1)
        return outputs

    def rejected(self, start_ns: int) -> None:
        self.stats.failed(time.perf_counter_ns() - start_ns, "OTHER")


def _warmup_samples(model: ServedModel, model_dir: Path) -> list[dict[str, np.ndarray]]:
    """Triton's model_warmup if the config has one; else zeros at batch 1 (and the max batch)."""
    samples: list[dict[str, np.ndarray]] = []
    batching = model.max_batch_size > 0
    for warmup in model.config.model_warmup:
        sample: dict[str, np.ndarray] = {}
        for name, spec in warmup.inputs.items():
            dtype: DataType = BY_CONFIG_NAME[model_config_pb2.DataType.Name(spec.data_type)]
            dims = [int(d) for d in spec.dims]
            shape = ([max(warmup.batch_size, 1)] if batching else []) + dims
            choice = spec.WhichOneof("input_data_type")
            if choice == "input_data_file":
                raw = (model_dir / "warmup" / spec.input_data_file).read_bytes()
                sample[name] = _raw_to_array(
                    model.input_specs[name], raw, tuple(shape), f"warm-up input {name!r}"
                )
            elif choice == "random_data" and not dtype.is_bytes:
                sample[name] = np.random.default_rng(0).random(shape).astype(dtype.numpy)
            elif dtype.is_bytes:
                sample[name] = np.full(shape, b"", dtype=object)
            else:
                sample[name] = np.zeros(shape, dtype=dtype.numpy)
        samples += [sample] * max(warmup.count, 1)
    if samples or model.backend.format == "python":
        return samples  # a python model's own load() is its warm-up
    if any(spec.dtype.is_bytes for spec in model.inputs):
        return []
    batch_sizes = [1]
    if batching and model.max_batch_size > 1:
        batch_sizes.append(model.max_batch_size)
    for rows in batch_sizes:
        sample = {}
        for spec in model.inputs:
            dims = [1 if d == -1 else d for d in spec.dims]
            shape = [rows, *dims] if batching else dims
            sample[spec.name] = np.zeros(shape, dtype=spec.dtype.numpy)
        samples.append(sample)
    return samples


@dataclass
class ModelEntry:
    name: str
    source: repository.ModelSource | None
    versions: dict[int, ServedModel] = field(default_factory=dict)
    latest: ServedModel | None = None
    state: str = "UNAVAILABLE"  # LOADING | READY | UNAVAILABLE
    reason: str = ""
    wanted: bool = True  # False once unloaded on request: then it no longer gates readiness


class ModelRegistry:
    """Every model this server knows, and the loading/unloading of them."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.entries: dict[str, ModelEntry] = {}
        self.started = False  # initial loading finished
        self.draining = False
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._single = repository.is_single_model(options.repository)
        self._load_lock = asyncio.Lock()

    # --- lookups on the request path -------------------------------------------------------------

    def lookup(self, name: str, version: str) -> ServedModel:
        entry = self.entries.get(name)
        if entry is None:
            served = ", ".join(sorted(self.entries)) or "none"
            raise not_found(f"unknown model {name!r} (this server serves: {served})")
        if not version:
            model = entry.latest
            if model is None:
                reason = f": {entry.reason}" if entry.reason else ""
                raise unavailable(f"model {name!r} is not ready ({entry.state.lower()}{reason})")
            return model
        found = entry.versions.get(int(version)) if version.isdigit() else None
        if found is None:
            serving = ", ".join(str(v) for v in sorted(entry.versions)) or "none"
            raise not_found(f"unknown version {version!r} of model {name!r} (serving versions: {serving})")
        return found

    def ready(self) -> bool:
        return (
            self.started
            and not self.draining
            and all(entry.state == "READY" for entry in self.entries.values() if entry.wanted)
        )

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str) -> dict[str, Any]:
        model = self.lookup(name, version)
        document = model.metadata()
        if not version:
            document["versions"] = [str(v) for v in sorted(self.entries[name].versions)]
        return document

    def statistics(self, name: str, version: str) -> list[tuple[ServedModel, str]]:
        if name:
            model = self.lookup(name, version)
            return [(model, model.version_str)]
        return [
            (model, model.version_str)
            for entry in sorted(self.entries.values(), key=lambda e: e.name)
            for _, model in sorted(entry.versions.items())
        ]

    def all_models(self) -> list[ServedModel]:
        return [model for entry in self.entries.values() for model in entry.versions.values()]

    def index(self, ready_only: bool) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        names = set(self.entries)
        with contextlib.suppress(ModelLoadError):
            names |= {s.name for s in self._discover()}
        for name in sorted(names):
            entry = self.entries.get(name)
            if entry is None:
                if not ready_only:
                    rows.append({"name": name})
                continue
            if entry.versions:
                rows += [{"name": name, "version": str(v), "state": "READY"} for v in sorted(entry.versions)]
            elif not ready_only:
                rows.append({"name": name, "state": entry.state, "reason": entry.reason})
        return rows

    # --- loading -------------------------------------------------------------------------------

    def _discover(self) -> list[repository.ModelSource]:
        options = self.options
        return repository.discover(options.repository, options.model_name, options.model_version)

    async def load_initial(self) -> None:
        """Load what the server was started with; raises ModelLoadError naming the first failure."""
        sources = self._discover()
        if self.options.model_name and not self._single:
            wanted = [s for s in sources if s.name == self.options.model_name]
            if not wanted:
                found = ", ".join(s.name for s in sources)
                raise ModelLoadError(
                    f"model {self.options.model_name!r} not found in {self.options.repository} (found: {found})"
                )
            sources = wanted
        for source in sources:
            self.entries[source.name] = ModelEntry(source.name, source, state="LOADING", reason="loading")
        for source in sources:
            await self.load(source.name, source=source)
        self.started = True

    async def load(
        self,
        name: str,
        *,
        source: repository.ModelSource | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """(Re)load a model; on failure the versions already serving keep serving."""
        async with self._load_lock:
            if source is None:
                source = self._source_for(name, parameters or {})
            entry = self.entries.get(name)
            if entry is None:
                entry = self.entries[name] = ModelEntry(name, source, state="LOADING", reason="loading")
            elif not entry.versions:
                entry.state, entry.reason = "LOADING", "loading"
            override = None
            if parameters and "config" in parameters:
                override = configs.config_from_json(str(parameters["config"]), f"load request for {name!r}")
            loop = asyncio.get_running_loop()
            try:
                loaded = await loop.run_in_executor(self._loader, self._load_sync, source, override)
            except Exception as exc:
                if not entry.versions:
                    # A model that never served does not take the server out of readiness.
                    entry.state, entry.reason = "UNAVAILABLE", str(exc)
                    entry.wanted = not self.started
                if isinstance(exc, ModelLoadError):
                    raise
                # A bug or an unexpected library error: still say which model.
                raise ModelLoadError(f"model {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
            for model in loaded:
                model.scheduler.start()
            old = list(entry.versions.values())
            entry.source = source
            entry.versions = {model.version: model for model in loaded}
            entry.latest = loaded[-1]
            entry.state, entry.reason, entry.wanted = "READY", "", True
        for model in old:
            await model.scheduler.close()
            model.backend.close()

    def _source_for(self, name: str, parameters: dict[str, Any]) -> repository.ModelSource:
        files = {k: v for k, v in parameters.items() if k.startswith("file:")}
        if files:
            if "config" not in parameters:
                raise ModelLoadError("a load request with files must also give 'config'")
            return self._materialize(name, files)
        for source in self._discover():
            if source.name == name:
                return source
        raise ModelLoadError(f"model {name!r} not found in {self.options.repository}")

    def _materialize(self, name: str, files: dict[str, Any]) -> repository.ModelSource:
        """Write a load request's `file:<path>` contents into a private folder under /tmp."""
        root = Path(tempfile.mkdtemp(prefix=f"modelplane-{name}-")) / name
        for key, value in files.items():
            relative = Path(key[len("file:") :])
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise ModelLoadError(f"load request file {key!r} must be a relative path inside the model")
            content = value if isinstance(value, bytes) else base64.b64decode(str(value), validate=True)
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        versions = {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}
        return repository.ModelSource(name, root, versions)

    def _load_sync(self, source: repository.ModelSource, override: Any) -> list[ServedModel]:
        options = self.options
        where = str(source.root)
        base: Any = override
        if base is None and source.config_file is not None:
            base = configs.read_config_pbtxt(source.config_file)
        elif base is None and source.yaml_file is not None:
            base = configs.read_model_yaml(source.yaml_file)
        config_source = str(source.config_file or source.yaml_file or "the model file")
        requested = options.model_version if (self._single or source.name == options.model_name) else None
        version_numbers = configs.select_versions(
            base or ModelConfig(), sorted(source.versions), requested, where
        )
        loaded = []
        try:
            for version in version_numbers:
                loaded.append(self._load_version(source, version, base, config_source))
        except BaseException:
            for model in loaded:
                model.backend.close()
                for worker in model.scheduler.workers:
                    worker.stop()
            raise
        return loaded

    def _load_version(
        self, source: repository.ModelSource, version: int, base: Any, config_source: str
    ) -> ServedModel:
        options = self.options
        started = time.perf_counter()
        location = source.versions[version]
        files = repository.version_files(
            location, options.model_format, base.default_model_filename if base is not None else ""
        )
        load_options = LoadOptions(source.name, version, options.device, options.precision, options.threads)
        backend = open_backend(files, load_options)
        try:
            config = self._resolve_config(base, backend, files, source, config_source)
            inputs, outputs = configs.tensor_specs(config)
            backend.bind(inputs, outputs)
            instances = options.instances or sum(g.count or 1 for g in config.instance_group) or 1
            model = ServedModel(
                source.name,
                version,
                config,
                backend,
                files.model_file,
                instances,
                options.device,
                options.precision,
            )
            loaded_s = time.perf_counter() - started
            warm_s = 0.0
            if options.warmup:
                samples = _warmup_samples(model, source.root)
                warm_start = time.perf_counter()
                try:
                    warm_up(model.scheduler.workers, backend.run, samples)
                except Exception as exc:
                    raise ModelLoadError(
                        f"{files.model_file}: warm-up inference failed: {type(exc).__name__}: {exc}"
                    ) from exc
                warm_s = time.perf_counter() - warm_start
        except BaseException:
            backend.close()
            raise
        batching = (
            f"dynamic batching up to {model.max_batch_size} rows, queue delay "
            f"{config.dynamic_batching.max_queue_delay_microseconds} us"
            if model.dynamic_batching
            else f"max_batch_size {model.max_batch_size}, no dynamic batching"
        )
        log.info(
            "loaded model %r version %d (%s) from %s in %.2f s (warm-up %.2f s) on %s, precision %s; "
            "config from %s; %s; %d instance(s); inputs %s; outputs %s",
            source.name,
            version,
            files.format,
            files.model_file,
            loaded_s,
            warm_s,
            options.device,
            options.precision or "as saved",
            config_source,
            batching,
            instances,
            [spec.describe() for spec in model.inputs],
            [spec.describe() for spec in model.outputs],
        )
        return model

    def _resolve_config(
        self,
        base: Any,
        backend: Backend,
        files: repository.VersionFiles,
        source: repository.ModelSource,
        config_source: str,
    ) -> Any:
        options = self.options
        introspected = backend.introspect()
        if base is None or not base.input or not base.output:
            if introspected is None:
                raise ModelLoadError(
                    f"cannot tell the inputs and outputs of {files.model_file}: {files.format} models do not "
                    f"record them; add {source.root / repository.CONFIG_FILE} or {source.root / repository.YAML_FILE}"
                )
            if base is None:
                base = introspected
            else:
                merged = ModelConfig()
                merged.CopyFrom(base)
                if not merged.input:
                    merged.input.extend(introspected.input)
                if not merged.output:
                    merged.output.extend(introspected.output)
                if not base.input and not base.max_batch_size:
                    merged.max_batch_size = introspected.max_batch_size
                    if introspected.HasField("dynamic_batching") and not merged.HasField("dynamic_batching"):
                        merged.dynamic_batching.SetInParent()
                base = merged
        config = configs.apply_overrides(
            base,
            name=source.name,
            max_batch_size=options.max_batch_size,
            max_queue_delay_us=options.max_queue_delay_us,
            source=config_source,
        )
        if not config.platform:
            config.platform = backend.platform
        if not config.backend:
            config.backend = backend.backend_name
        if options.precision:
            config.parameters["precision"].string_value = options.precision
        config.parameters["device"].string_value = options.device
        configs.validate(config, config_source)
        return config

    async def unload(self, name: str) -> None:
        entry = self.entries.get(name)
        if entry is None or not entry.versions:
            raise not_found(f"model {name!r} is not loaded")
        old = list(entry.versions.values())
        entry.versions, entry.latest = {}, None
        entry.state, entry.reason, entry.wanted = "UNAVAILABLE", "unloaded", False
        for model in old:
            await model.scheduler.close()
            model.backend.close()
        log.info("unloaded model %r", name)

    def busy(self) -> bool:
        return any(model.scheduler.busy for model in self.all_models())

    async def close(self, grace_s: float) -> None:
        """Finish what the models have queued (within grace_s) and release their threads."""
        await asyncio.gather(*(model.scheduler.close(grace_s) for model in self.all_models()))
        self._loader.shutdown(wait=False, cancel_futures=True)


def default_threads() -> int:
    """CPUs this process may use: the cgroup quota (Kubernetes limits) or the affinity mask."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)
