"""The settings `modelplane serve` runs with (parsed by cli.py, read everywhere else)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Triton's ports; KServe's Triton runtime maps them to 8080/9000 outside.
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_MAX_REQUEST_BYTES = 1 << 30  # 1 GiB: images and embeddings batches, not unbounded
DEFAULT_MAX_HEADER_BYTES = 64 << 10
DEFAULT_DRAIN_SECONDS = 25.0  # inside Kubernetes' default 30 s termination grace period


@dataclass(frozen=True)
class ServeOptions:
    repository: Path
    model_name: str | None = None
    model_version: str | None = None
    model_format: str | None = None
    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    precision: str | None = None
    instances: int | None = None
    auth_token: str | None = None
    host: str = "0.0.0.0"
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    device: str = "cpu"
    threads: int = 1
    warmup: bool = True
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
