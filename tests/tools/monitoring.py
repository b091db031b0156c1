"""The Prometheus Operator's own CRDs, to validate the chart's ServiceMonitor and PodMonitor against.

The CRDs come from the pinned upstream Go module (its example/prometheus-operator-crd folder), fetched
through the Go module proxy into the cache like every other Go input, and checked by go.sum's
checksum database.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from modelplane.devcluster.paths import cache_dir, go_env

PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
CRD_FOLDER = "example/prometheus-operator-crd"
PLURALS = {"ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors"}


def module_dir() -> Path:
    """Where the pinned module lies in the Go module cache (downloaded on first use)."""
    env = {**os.environ, **go_env(cache_dir())}
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION}"],
            cwd=scratch, env=env, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or info.get("Error"):
        raise RuntimeError(
            f"go mod download {PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION} failed: "
            f"{info.get('Error') or result.stderr.strip()}"
        )
    return Path(info["Dir"])


def crd_files(kinds: tuple[str, ...] = tuple(PLURALS)) -> dict[str, Path]:
    """The CRD file of each kind, e.g. {"ServiceMonitor": .../monitoring.coreos.com_servicemonitors.yaml}."""
    folder = module_dir() / CRD_FOLDER
    return {kind: folder / f"monitoring.coreos.com_{PLURALS[kind]}.yaml" for kind in kinds}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI schema that rejects unknown fields, as the API server does with strict validation."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def validation_errors(obj: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    """What the CRD's schema (made strict) says about one object; empty when it is valid."""
    import jsonschema  # type: ignore[import-untyped]

    group = crd["spec"]["group"]
    versions = {f"{group}/{v['name']}": v for v in crd["spec"]["versions"]}
    version = versions.get(obj.get("apiVersion", ""))
    if version is None:
        return [f"apiVersion {obj.get('apiVersion')!r} is not served by {crd['metadata']['name']}"]
    validator = jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


def load_crds() -> dict[str, dict[str, Any]]:
    """{kind: CRD object} for the ServiceMonitor and PodMonitor CRDs."""
    return {kind: yaml.safe_load(path.read_text()) for kind, path in crd_files().items()}
