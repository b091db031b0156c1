"""Run helm against charts/modelplane: lint, template, and the rendered objects as dicts."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.tools.generate import CHART_DIR


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr (e.g. the schema's complaint)."""


def run_helm(helm: Path, *args: str, values: dict[str, Any] | None = None, timeout: float = 300) -> str:
    """Run helm with optional values (written to a file, so types survive), returning stdout."""
    with tempfile.TemporaryDirectory(prefix="modelplane-helm-") as scratch:
        command = [str(helm), *args]
        if values is not None:
            values_file = Path(scratch) / "values.yaml"
            values_file.write_text(yaml.safe_dump(values))
            command += ["--values", str(values_file)]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        # `helm lint` prints its findings on stdout, everything else on stderr: keep both.
        output = "\n".join(part.strip() for part in (result.stdout, result.stderr) if part.strip())
        raise HelmError(f"helm {' '.join(args)} failed ({result.returncode}):\n{output}")
    return result.stdout


def template(
    helm: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "mp",
    namespace: str = "modelplane-system",
    extra: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """`helm template` of the chart (tests and hooks included), as a list of objects."""
    out = run_helm(helm, "template", release, str(CHART_DIR), "--namespace", namespace, *extra, values=values)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def lint(helm: Path, values: dict[str, Any] | None = None) -> str:
    """`helm lint --strict` of the chart; raises HelmError on any warning or error."""
    return run_helm(helm, "lint", "--strict", str(CHART_DIR), values=values)


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of one kind (and name)."""
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of one kind (and name); fails naming what was rendered otherwise."""
    found = find(objects, kind, name)
    if len(found) != 1:
        rendered = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
        raise AssertionError(f"expected one {kind} {name or ''}, got {len(found)} among {rendered}")
    return found[0]


class HelmCli:
    """helm against a cluster, with its own config/cache folders (nothing read from or left in $HOME)."""

    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(kubeconfig),
        }

    def __call__(
        self, *args: str, values: dict[str, Any] | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="modelplane-helm-") as scratch:
            command = [str(self.binary), *args]
            if values is not None:
                values_file = Path(scratch) / "values.yaml"
                values_file.write_text(yaml.safe_dump(values))
                command += ["--values", str(values_file)]
            result = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=timeout, env=self.env
            )
        if check and result.returncode != 0:
            output = "\n".join(part.strip() for part in (result.stdout, result.stderr) if part.strip())
            raise HelmError(f"helm {' '.join(args)} failed ({result.returncode}):\n{output}")
        return result
