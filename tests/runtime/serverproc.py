"""Start `modelplane serve` as a real process on free ports, wait until ready, read its metrics."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MODELPLANE = str(Path(sys.executable).with_name("modelplane"))


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll until the condition holds (a wait for a state, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status of GET path, or None when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if http_status(self.http_port, "/v2/health/ready", timeout=1.0) == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def metrics(self) -> dict[str, float]:
        """Prometheus samples keyed by `name{labels}` exactly as exposed."""
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def metric(self, name: str, model: str, version: str = "1", **labels: str) -> float:
        label_text = ",".join(
            [f'model="{model}"', f'version="{version}"', *(f'{k}="{v}"' for k, v in labels.items())]
        )
        return self.metrics().get(f"{name}{{{label_text}}}", float("nan"))


def serve_argv(repository: Path | str, ports: Sequence[int], *extra: str) -> list[str]:
    """`modelplane serve` on 127.0.0.1 with the given HTTP, gRPC and metrics ports."""
    http_port, grpc_port, metrics_port = ports
    return [
        MODELPLANE,
        "serve",
        "--model-repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        *extra,
    ]


def start_server(
    repository: Path | str,
    *extra: str,
    log_dir: Path,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> Server:
    http_port, grpc_port, metrics_port = free_ports(3)
    args = serve_argv(repository, (http_port, grpc_port, metrics_port), *extra)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{http_port}.log"
    process_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=process_env)
    server = Server(process, http_port, grpc_port, metrics_port, log_path, args)
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop(5)
            raise
    return server


def run_to_exit(repository: Path | str, *extra: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run a server that is expected to fail at start; its exit code and output."""
    argv = serve_argv(repository, free_ports(3), *extra)
    result = subprocess.run(argv, capture_output=True, timeout=timeout, text=True)
    return result.returncode, result.stdout + result.stderr


def parse_labels(key: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', key))
