"""Runtime benchmark: `modelplane serve` against MLServer 1.7.1 on the same TorchScript models.

Both servers get the same models (created here from fixed seeds), the same batching budget, the same
torch thread settings and the same load: `tritonclient.grpc.aio` issuing `infer` with raw inputs at
a fixed concurrency. Servers are measured in short interleaved rounds (ours, MLServer, MLServer,
ours, ...) and each cell reports the median round, because this machine's noise (±25% between runs)
is larger than most of the effects worth seeing. Every response of the warm-up and a sample of the
measured ones are compared with the local torch result, so a server that answers wrongly reports
errors instead of winning.

Run `make bench-runtime` (or `.venv/bin/python bench/runtime_bench.py --help`). It prints a table
and writes `bench/results/runtime-<timestamp>.json`. See bench/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MLSERVER_RUNTIME_DIR = BENCH_DIR / "mlserver_runtime"

MLSERVER_VERSION = "1.7.1"
# uvloop 0.22 crashes MLServer 1.7.1's worker at start; torch is pinned to the project's version so
# both servers run the same kernels (pip's cache already holds that wheel after the project install).
MLSERVER_REQUIREMENTS = (
    f"mlserver=={MLSERVER_VERSION}",
    "uvloop<0.22",
    f"torch=={torch.__version__.split('+')[0]}",
)

GRPC_MESSAGE_LIMIT = 64 * 1024 * 1024
INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"
# Distinct inputs cycled by the load generator: enough that a server mixing up rows of a batch
# returns a wrong answer for some request, few enough to precompute every expected output.
DISTINCT_INPUTS = 64
# Batched and unbatched kernels sum in different orders; these bounds are far below any real error.
RTOL, ATOL = 1e-4, 1e-5

# The targets from the project's issue: ours/MLServer infer/s at the highest concurrency.
TARGETS = {"mlp": 3.0, "cnn": 1.5}


# --------------------------------------------------------------------------------------------------
# Models


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: its name, one request's row shape (without the batch dim) and its seed."""

    name: str
    row_shape: tuple[int, ...]
    output_dim: int
    seed: int
    build: Callable[[], nn.Module]


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", (64,), 10, seed=0, build=MLP),
    "cnn": ModelSpec("cnn", (3, 32, 32), 10, seed=1, build=CNN),
}


def build_torchscript(spec: ModelSpec) -> torch.jit.ScriptModule:
    """The model with weights from its seed, traced to TorchScript (what Triton repositories hold)."""
    torch.manual_seed(spec.seed)
    module = spec.build().eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.zeros(1, *spec.row_shape))
    return traced


def make_inputs(spec: ModelSpec, count: int = DISTINCT_INPUTS) -> np.ndarray:
    """`count` one-row requests, deterministic per model: shape [count, 1, *row_shape], fp32."""
    rng = np.random.default_rng(1000 + spec.seed)
    return rng.standard_normal((count, 1, *spec.row_shape), dtype=np.float32)


def expected_outputs(module: torch.jit.ScriptModule, inputs: np.ndarray) -> np.ndarray:
    """The local, unbatched result for each request: what every server must return."""
    with torch.inference_mode():
        return np.stack([module(torch.from_numpy(row)).numpy() for row in inputs])


def config_pbtxt(spec: ModelSpec, max_batch_size: int, delay_us: int) -> str:
    """A Triton `config.pbtxt` for the model (dims exclude the batch dim, as Triton's do)."""
    dims = ", ".join(str(d) for d in spec.row_shape)
    return (
        f'name: "{spec.name}"\n'
        'platform: "pytorch_libtorch"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ {dims} ] }} ]\n'
        f'output [ {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {spec.output_dim} ] }} ]\n'
        f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"
    )


def mlserver_model_settings(spec: ModelSpec, max_batch_size: int, delay_us: int) -> dict[str, Any]:
    """MLServer's model-settings.json with the same budget.

    MLServer's `max_batch_size` counts requests and Triton's counts rows; with one-row requests
    the same number means the same batch. `max_batch_time` is in seconds.
    """
    return {
        "name": spec.name,
        "implementation": "torchscript_model.TorchScriptModel",
        "parameters": {"uri": "./model.pt", "version": "1"},
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *spec.row_shape]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, spec.output_dim]}],
        "max_batch_size": max_batch_size,
        "max_batch_time": delay_us / 1e6,
    }


def mlserver_settings(grpc_port: int, http_port: int, metrics_port: int) -> dict[str, Any]:
    """MLServer's settings.json: one process (`parallel_workers: 0`), no debug access logs."""
    return {
        "debug": False,
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "grpc_max_message_length": GRPC_MESSAGE_LIMIT,
        "load_models_at_startup": True,
    }


def write_repositories(
    root: Path, specs: Sequence[ModelSpec], max_batch_size: int, delay_us: int
) -> dict[str, torch.jit.ScriptModule]:
    """Write `root/modelplane` (Triton layout) and `root/mlserver` (MLServer layout), same model files."""
    modules: dict[str, torch.jit.ScriptModule] = {}
    for spec in specs:
        module = build_torchscript(spec)
        modules[spec.name] = module
        ours = root / "modelplane" / spec.name
        (ours / "1").mkdir(parents=True, exist_ok=True)
        torch.jit.save(module, str(ours / "1" / "model.pt"))
        (ours / "config.pbtxt").write_text(config_pbtxt(spec, max_batch_size, delay_us))
        theirs = root / "mlserver" / spec.name
        theirs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ours / "1" / "model.pt", theirs / "model.pt")
        settings = mlserver_model_settings(spec, max_batch_size, delay_us)
        (theirs / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return modules


# --------------------------------------------------------------------------------------------------
# Servers


def cache_dir() -> Path:
    return Path(os.environ.get("MODELPLANE_CACHE") or Path.home() / ".cache" / "modelplane")


def ensure_mlserver_venv(log: Callable[[str], None]) -> Path:
    """MLServer's own virtual environment (its pins clash with ours); returns its `mlserver` binary.

    Keyed by the requirement list, so changing a pin builds a fresh one.
    """
    venv = cache_dir() / "bench" / f"mlserver-{MLSERVER_VERSION}"
    marker = venv / ".installed"
    wanted = "\n".join(MLSERVER_REQUIREMENTS)
    if marker.exists() and marker.read_text() == wanted:
        return venv / "bin" / "mlserver"
    log(f"setting up MLServer {MLSERVER_VERSION} in {venv} (first run only; about two minutes)")
    python = shutil.which("python3.11") or sys.executable
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *MLSERVER_REQUIREMENTS], check=True)
    marker.write_text(wanted)
    return venv / "bin" / "mlserver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its live descendants (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


def system_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot, summed over cores (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    """A server process under test, reachable over gRPC at `url`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    grpc_port: int
    # Where Triton-named metrics can be scraped (ours); None for a server without them (MLServer).
    metrics_port: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, models: Sequence[str], timeout_s: float) -> float:
        """Poll the health API (server ready, then each model ready); returns seconds waited."""
        import tritonclient.grpc as grpcclient

        started = time.monotonic()
        client = grpcclient.InferenceServerClient(self.url)
        try:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited before it was ready; log:\n{self.log_tail()}")
                with contextlib.suppress(Exception):
                    if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                        return time.monotonic() - started
                if time.monotonic() - started > timeout_s:
                    raise RuntimeError(
                        f"{self.name} not ready after {timeout_s:.0f}s; log:\n{self.log_tail()}"
                    )
                time.sleep(0.2)
        finally:
            client.close()

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.process.pid) if self.process else 0.0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def metric_sum(text: str, name: str, model: str) -> float:
    """Sum of a Prometheus counter's samples for one model, from the text exposition format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            total += float(line.rsplit(None, 1)[1])
    return total


def batch_counters(server: Server, model: str) -> tuple[float, float] | None:
    """(inferences, executions) so far, from Triton's `nv_inference_count`/`nv_inference_exec_count`."""
    if server.metrics_port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    return metric_sum(text, "nv_inference_count", model), metric_sum(text, "nv_inference_exec_count", model)


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def server_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def modelplane_server(
    repo: Path, logs: Path, threads: int, max_batch_size: int, delay_us: int, cpus: str | None
) -> Server:
    binary = Path(sys.executable).parent / "modelplane"
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    argv = [
        str(binary) if binary.exists() else "modelplane",
        "serve",
        "--model-repository", str(repo),
        "--grpc-port", str(grpc_port),
        "--http-port", str(http_port),
        "--metrics-port", str(metrics_port),
        "--max-batch-size", str(max_batch_size),
        "--max-queue-delay-us", str(delay_us),
        "--threads", str(threads),
        "--host", "127.0.0.1",
    ]  # fmt: skip
    env = server_env(threads)
    log = logs / "modelplane.log"
    return Server("modelplane", pinned(argv, cpus), env, repo, log, grpc_port, metrics_port=metrics_port)


def mlserver_server(binary: Path, repo: Path, logs: Path, threads: int, cpus: str | None) -> Server:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    (repo / "settings.json").write_text(json.dumps(mlserver_settings(grpc_port, http_port, metrics_port)))
    env = server_env(threads, {"PYTHONPATH": str(MLSERVER_RUNTIME_DIR)})
    argv = [str(binary), "start", str(repo)]
    return Server("mlserver", pinned(argv, cpus), env, repo, logs / "mlserver.log", grpc_port)


# --------------------------------------------------------------------------------------------------
# Load


@dataclass
class Window:
    """One measured round of one server at one concurrency."""

    server: str
    model: str
    concurrency: int
    round: int
    duration_s: float
    count: int
    errors: int
    mismatches: int
    verified: int
    infer_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us_per_infer: float
    client_cpu_us_per_infer: float
    server_core_pct: float
    client_core_pct: float
    other_cpu_pct: float
    mean_batch: float | None = None
    first_error: str = ""


def percentile_ms(latencies: np.ndarray, q: float) -> float:
    return float(np.percentile(latencies, q) * 1e3) if latencies.size else float("nan")


async def drive(
    url: str,
    model: str,
    inputs: np.ndarray,
    expected: np.ndarray,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    verify_every: int,
) -> tuple[list[float], int, int, int, str, float]:
    """Closed-loop load: `concurrency` workers, each sending its next request when the last returns.

    Only requests that start after the warm-up and finish before the end are counted. Returns
    (latencies, errors, mismatches, verified, first error, measured seconds).
    """
    import tritonclient.grpc.aio as aioclient
    from tritonclient.grpc import InferInput

    prepared = []
    for row in inputs:
        infer_input = InferInput(INPUT_NAME, list(row.shape), "FP32")
        infer_input.set_data_from_numpy(row)
        prepared.append(infer_input)

    client = aioclient.InferenceServerClient(url)
    latencies: list[float] = []
    counters = {"errors": 0, "mismatches": 0, "verified": 0}
    first_error: list[str] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    clock = time.perf_counter

    async def worker(offset: int) -> None:
        i, done = offset, 0
        while True:
            sent_loop = loop.time()
            if sent_loop >= stop_at:
                return
            index = i % len(prepared)
            t0 = clock()
            try:
                result = await client.infer(model, [prepared[index]])
            except Exception as exc:
                counters["errors"] += 1
                if not first_error:
                    first_error.append(str(exc)[:300])
                await asyncio.sleep(0.01)  # a dead server must not turn this into a busy loop
                i += concurrency
                done += 1
                continue
            elapsed = clock() - t0
            warm = sent_loop < measure_from
            if warm or done % verify_every == 0:
                counters["verified"] += 1
                output = result.as_numpy(OUTPUT_NAME)
                if output is None or not np.allclose(output, expected[index], rtol=RTOL, atol=ATOL):
                    counters["mismatches"] += 1
                    if not first_error:
                        first_error.append(f"wrong output for input {index}: {output!r}")
            if not warm and loop.time() <= stop_at:
                latencies.append(elapsed)
            i += concurrency
            done += 1

    try:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    finally:
        await client.close()
    return (
        latencies,
        counters["errors"],
        counters["mismatches"],
        counters["verified"],
        "".join(first_error),
        duration_s,
    )


def run_window(
    server: Server,
    all_servers: Sequence[Server],
    spec: ModelSpec,
    inputs: np.ndarray,
    expected: np.ndarray,
    concurrency: int,
    round_: int,
    warmup_s: float,
    duration_s: float,
    verify_every: int,
) -> Window:
    """Measure one round, with the CPU spent by this server, this client and everything else."""
    wall0, busy0, self0 = time.monotonic(), system_busy_seconds(), self_cpu_seconds()
    servers0 = {s.name: s.cpu_seconds() for s in all_servers}
    batches0 = batch_counters(server, spec.name)
    latencies, errors, mismatches, verified, first_error, measured = asyncio.run(
        drive(server.url, spec.name, inputs, expected, concurrency, warmup_s, duration_s, verify_every)
    )
    wall = time.monotonic() - wall0
    busy = system_busy_seconds() - busy0
    client_cpu = self_cpu_seconds() - self0
    server_cpu = {s.name: s.cpu_seconds() - servers0[s.name] for s in all_servers}
    other = max(0.0, busy - client_cpu - sum(server_cpu.values()))
    batches1 = batch_counters(server, spec.name)
    mean_batch = None
    if batches0 and batches1 and batches1[1] > batches0[1]:
        mean_batch = (batches1[0] - batches0[0]) / (batches1[1] - batches0[1])
    lat = np.asarray(latencies)
    count = int(lat.size)
    # CPU per inference covers the warm-up too (the counters cannot be split), so divide by all
    # requests sent in the window, estimated from the measured rate.
    sent = max(1.0, count * wall / measured)
    return Window(
        server=server.name,
        model=spec.name,
        concurrency=concurrency,
        round=round_,
        duration_s=measured,
        count=count,
        errors=errors,
        mismatches=mismatches,
        verified=verified,
        infer_per_s=count / measured,
        p50_ms=percentile_ms(lat, 50),
        p90_ms=percentile_ms(lat, 90),
        p99_ms=percentile_ms(lat, 99),
        max_ms=float(lat.max() * 1e3) if count else float("nan"),
        server_cpu_us_per_infer=server_cpu[server.name] / sent * 1e6,
        client_cpu_us_per_infer=client_cpu / sent * 1e6,
        server_core_pct=100.0 * server_cpu[server.name] / wall,
        client_core_pct=100.0 * client_cpu / wall,
        other_cpu_pct=100.0 * other / (wall * (os.cpu_count() or 1)),
        mean_batch=mean_batch,
        first_error=first_error,
    )


# --------------------------------------------------------------------------------------------------
# Summary


@dataclass
class Cell:
    """The median round of one (model, server, concurrency)."""

    model: str
    server: str
    concurrency: int
    rounds: int
    infer_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_infer: float
    client_core_pct: float
    mean_batch: float | None
    errors: int
    mismatches: int
    infer_per_s_spread: tuple[float, float] = field(default=(0.0, 0.0))


def summarize(windows: Sequence[Window]) -> list[Cell]:
    """Median over rounds per cell; errors and mismatches are summed, never averaged away."""
    # Run order for models and concurrencies; ours before MLServer within a pair.
    order = {key: i for i, key in enumerate(dict.fromkeys((w.model, w.concurrency) for w in windows))}
    rank = {"modelplane": 0, "mlserver": 1}
    keys = sorted(
        {(w.model, w.server, w.concurrency) for w in windows},
        key=lambda k: (order[(k[0], k[2])], rank.get(k[1], 2)),
    )
    cells = []
    for model, server, conc in keys:
        ws = [w for w in windows if (w.model, w.server, w.concurrency) == (model, server, conc)]
        rates = [w.infer_per_s for w in ws]
        cells.append(
            Cell(
                model=model,
                server=server,
                concurrency=conc,
                rounds=len(ws),
                infer_per_s=statistics.median(rates),
                p50_ms=statistics.median(w.p50_ms for w in ws),
                p99_ms=statistics.median(w.p99_ms for w in ws),
                server_cpu_us_per_infer=statistics.median(w.server_cpu_us_per_infer for w in ws),
                client_core_pct=statistics.median(w.client_core_pct for w in ws),
                mean_batch=statistics.median(batches)
                if (batches := [w.mean_batch for w in ws if w.mean_batch])
                else None,
                errors=sum(w.errors for w in ws),
                mismatches=sum(w.mismatches for w in ws),
                infer_per_s_spread=(min(rates), max(rates)),
            )
        )
    return cells


def comparisons(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """ours/MLServer per (model, concurrency); a cell with errors never counts as a win."""
    rows = []
    by_key = {(c.model, c.server, c.concurrency): c for c in cells}
    for (model, server, conc), ours in by_key.items():
        theirs = by_key.get((model, "mlserver", conc))
        if server != "modelplane" or theirs is None:
            continue
        broken = ours.errors + ours.mismatches > 0
        ratio = ours.infer_per_s / theirs.infer_per_s if theirs.infer_per_s else float("nan")
        p99_ratio = ours.p99_ms / theirs.p99_ms if theirs.p99_ms else float("nan")
        rows.append(
            {
                "model": model,
                "concurrency": conc,
                "infer_per_s_ratio": ratio,
                "p99_ratio": p99_ratio,
                "ours_broken": broken,
                "target": TARGETS.get(model),
            }
        )
    return rows


def render_table(cells: Sequence[Cell], ratios: Sequence[dict[str, Any]], top_concurrency: int) -> str:
    by_key = {(r["model"], r["concurrency"]): r for r in ratios}
    header = (
        f"{'model':<5} {'conc':>4}  {'server':<10} {'infer/s':>8} {'min..max':>13} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'cpu us/inf':>10} {'batch':>5} {'err':>4}  {'ours/mls':>8} {'p99 o/m':>7}  target"
    )
    lines = [header, "-" * len(header)]
    for cell in cells:
        low, high = cell.infer_per_s_spread
        batch = f"{cell.mean_batch:.1f}" if cell.mean_batch else "-"
        line = (
            f"{cell.model:<5} {cell.concurrency:>4}  {cell.server:<10} {cell.infer_per_s:>8.0f} "
            f"{f'{low:.0f}..{high:.0f}':>13} {cell.p50_ms:>7.2f} {cell.p99_ms:>7.2f} "
            f"{cell.server_cpu_us_per_infer:>10.0f} {batch:>5} {cell.errors + cell.mismatches:>4}"
        )
        ratio = by_key.get((cell.model, cell.concurrency))
        if ratio and cell.server == "modelplane":
            line += f"  {ratio['infer_per_s_ratio']:>7.2f}x {ratio['p99_ratio']:>6.2f}x"
            target = ratio["target"]
            if ratio["ours_broken"]:
                line += "  BROKEN (errors)"
            elif target and cell.concurrency == top_concurrency:
                ok = ratio["infer_per_s_ratio"] >= target and ratio["p99_ratio"] <= 1.0
                line += f"  >={target:g}x, p99<=1: {'PASS' if ok else 'FAIL'}"
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Main


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def versions(mlserver_binary: Path | None) -> dict[str, str]:
    import grpc

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "grpcio": grpc.__version__,
        "tritonclient": importlib.metadata.version("tritonclient"),
        "numpy": np.__version__,
    }
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(REPO_ROOT)]
        found["git_commit"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        # The runtime under test may hold uncommitted changes: say so, or the commit misleads.
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "runtime-image"], capture_output=True, text=True
        )
        found["runtime_image_uncommitted_changes"] = str(bool(changed.stdout.strip())).lower()
    if mlserver_binary:
        # Ask MLServer's own environment, so the record shows what actually ran there.
        probe = "import mlserver, torch, uvloop; print(mlserver.__version__, torch.__version__, uvloop.__version__)"
        reply = subprocess.run(
            [str(mlserver_binary.parent / "python"), "-c", probe], capture_output=True, text=True
        )
        parts = reply.stdout.split()
        if len(parts) == 3:
            found.update({"mlserver": parts[0], "mlserver_torch": parts[1], "mlserver_uvloop": parts[2]})
    return found


def noise_label(other_cpu_pct: float) -> str:
    """How far to trust a run, from the share of the machine other processes used during it."""
    if other_cpu_pct < 5:
        return "quiet"
    if other_cpu_pct < 20:
        return "some noise: compare within this run only"
    return "noisy: ratios indicative only, rerun on a quiet machine"


def round_order(servers: Sequence[Server], round_: int) -> list[Server]:
    """ABBA interleaving: the server that goes first alternates, so drift hits both alike."""
    return list(servers) if round_ % 2 == 0 else list(reversed(servers))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: one short round per cell")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated, from: " + ",".join(MODELS))
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client concurrencies")
    parser.add_argument("--servers", default="modelplane,mlserver", help="which to run (default both)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per cell (median kept)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each round")
    parser.add_argument("--max-batch-size", type=int, default=32, help="rows (ours) = requests (MLServer)")
    parser.add_argument("--max-queue-delay-us", type=int, default=1000, help="batching delay, both servers")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each server")
    parser.add_argument(
        "--pin",
        choices=("split", "none"),
        default="split",
        help="split: server on CPU 0, load generator on CPU 1 (needs 2+ CPUs); none: let the OS place them",
    )
    parser.add_argument("--verify-every", type=int, default=16, help="check one in N measured responses")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for a server")
    parser.add_argument("--output", type=Path, help="JSON path (default bench/results/runtime-<ts>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the model repositories and logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.5, 0.5
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda message: print(f"[bench] {message}", file=sys.stderr, flush=True)  # noqa: E731
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        log(f"unknown model(s) {sorted(unknown)}; choose from {sorted(MODELS)}")
        return 2
    server_names = [s for s in args.servers.split(",") if s]
    if not set(server_names) <= {"modelplane", "mlserver"} or not server_names:
        log(f"--servers {args.servers!r}: use modelplane, mlserver or both")
        return 2
    specs = [MODELS[name] for name in args.models.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    cpus = os.cpu_count() or 1
    server_cpus, client_cpus = ("0", {1}) if args.pin == "split" and cpus >= 2 else (None, None)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = RESULTS_DIR / f"work-{stamp}"
    logs = RESULTS_DIR / f"runtime-{stamp}-logs"
    started = time.monotonic()
    machine = machine_info()
    mlserver_binary = ensure_mlserver_venv(log) if "mlserver" in server_names else None
    modules = write_repositories(work, specs, args.max_batch_size, args.max_queue_delay_us)
    inputs = {s.name: make_inputs(s) for s in specs}
    expected = {s.name: expected_outputs(modules[s.name], inputs[s.name]) for s in specs}

    servers: list[Server] = []
    if "modelplane" in server_names:
        servers.append(
            modelplane_server(
                work / "modelplane",
                logs,
                args.threads,
                args.max_batch_size,
                args.max_queue_delay_us,
                server_cpus,
            )
        )
    if mlserver_binary:
        servers.append(mlserver_server(mlserver_binary, work / "mlserver", logs, args.threads, server_cpus))

    windows: list[Window] = []
    ready_s: dict[str, float] = {}
    try:
        for server in servers:
            server.start()
        for server in servers:
            try:
                ready_s[server.name] = server.wait_ready([s.name for s in specs], args.ready_timeout)
            except RuntimeError as exc:
                log(f"{exc}\n(full log: {server.log_path})")
                shutil.rmtree(work, ignore_errors=True)
                return 2
            log(
                f"{server.name} ready in {ready_s[server.name]:.1f}s (pid {server.process.pid if server.process else '?'})"
            )
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        for spec in specs:
            for conc in concurrencies:
                for round_ in range(args.rounds):
                    for server in round_order(servers, round_):
                        window = run_window(
                            server, servers, spec, inputs[spec.name], expected[spec.name], conc, round_,
                            args.warmup, args.duration, args.verify_every,
                        )  # fmt: skip
                        windows.append(window)
                        log(
                            f"{spec.name} c={conc} round {round_} {server.name}: {window.infer_per_s:.0f} infer/s "
                            f"p50 {window.p50_ms:.2f} ms p99 {window.p99_ms:.2f} ms, errors {window.errors}, "
                            f"mismatches {window.mismatches}, other load {window.other_cpu_pct:.0f}%"
                            + (f" ({window.first_error})" if window.first_error else "")
                        )
    finally:
        for server in servers:
            server.stop()

    cells = summarize(windows)
    ratios = comparisons(cells)
    other_load = [w.other_cpu_pct for w in windows]
    other_median = statistics.median(other_load) if other_load else 0.0
    pin_mode = args.pin if server_cpus else "none"
    report = {
        "started": stamp,
        "wall_s": round(time.monotonic() - started, 1),
        "machine": {**machine, "loadavg_end": Path("/proc/loadavg").read_text().split()[:3]},
        "versions": versions(mlserver_binary),
        "settings": {
            "models": [s.name for s in specs],
            "concurrency": concurrencies,
            "servers": [s.name for s in servers],
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "max_batch_size": args.max_batch_size,
            "max_queue_delay_us": args.max_queue_delay_us,
            "torch_threads": args.threads,
            "pin": pin_mode,
            "server_cpus": server_cpus,
            "client_cpus": sorted(client_cpus) if client_cpus else None,
            "verify_every": args.verify_every,
            "quick": args.quick,
            "server_argv": {s.name: s.argv for s in servers},
            "ready_s": ready_s,
        },
        "other_cpu_pct_median": other_median,
        "cells": [asdict(c) for c in cells],
        "ratios": ratios,
        "windows": [asdict(w) for w in windows],
    }
    output = args.output or RESULTS_DIR / f"runtime-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    print(render_table(cells, ratios, max(concurrencies)))
    print(
        f"\n{args.rounds} round(s) x {args.duration:g}s per cell, median shown; batching budget "
        f"{args.max_batch_size} rows / {args.max_queue_delay_us} us; torch threads {args.threads}; "
        f"pinning {pin_mode}; CPU used by other processes during the run: median "
        f"{other_median:.0f}% of the machine ({noise_label(other_median)}). Results: {output}"
    )
    saturated = [c for c in cells if c.client_core_pct > 85]
    if server_cpus and saturated:
        names = ", ".join(f"{c.model}/{c.server}/c={c.concurrency}" for c in saturated)
        print(f"NOTE: the load generator's core was >85% busy in {names}: those rates are lower bounds.")
    failed = any(c.errors + c.mismatches for c in cells)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
