"""How to run `modelplane operator` as its own process, with its own identity.

Shared by `modelplane devcluster start-operator` (used by `make up`) and the integration tests'
``operator`` fixture, so both run the operator the same way.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

OPERATOR_MODULE = "modelplane.commands.operator"


class OperatorMissing(RuntimeError):
    """`modelplane operator` is not implemented in this checkout yet."""


def modelplane_executable() -> Path:
    """The `modelplane` script of the running Python environment."""
    return Path(sys.executable).parent / "modelplane"


def check_available() -> Path:
    """The `modelplane` executable, or a clear error if the operator command does not exist yet."""
    executable = modelplane_executable()
    if not executable.is_file():
        raise OperatorMissing(f"{executable} does not exist: install the project (make venv)")
    if importlib.util.find_spec(OPERATOR_MODULE) is None:
        raise OperatorMissing(
            f"`modelplane operator` is not available: the module {OPERATOR_MODULE} does not exist yet"
        )
    return executable


def operator_argv(
    executable: Path,
    *,
    liveness_port: int,
    metrics_port: int,
    resync_seconds: int | None = None,
    namespaces: Sequence[str] = (),
    peering: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The agreed interface: ``modelplane operator [--namespace NS]... [--liveness URL]
    [--metrics-port N] [--resync-seconds N] [--peering NAME]`` (pure)."""
    argv = [str(executable), "operator"]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    argv += ["--liveness", liveness_url(liveness_port), "--metrics-port", str(metrics_port)]
    if resync_seconds is not None:
        argv += ["--resync-seconds", str(resync_seconds)]
    if peering:
        argv += ["--peering", peering]
    return argv + list(extra)


def liveness_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/healthz"
