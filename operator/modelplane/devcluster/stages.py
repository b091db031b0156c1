"""KWOK's --config: upstream's stages (from the build output) plus our fault stages.

KWOK v0.8 ships no built-in stages; the build copies upstream's from the module cache next to the
kwok binary (``files/``), and ``up`` composes them here, so no copy of upstream's YAML is committed.
Upstream's pod-ready stage is narrowed to pods *without* a fault annotation, so a faulted pod is
never also marked Ready.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from modelplane.devcluster.paths import CONTROLPLANE_DIR

FAULT_ANNOTATION = "devcluster.modelplane.dev/fault"
MISSING_SECRET_ANNOTATION = "devcluster.modelplane.dev/missing-secret"
# CreateContainerConfigError on this container (init or main); default: the first that refers to a Secret.
FAULT_CONTAINER_ANNOTATION = "devcluster.modelplane.dev/fault-container"
EXIT_CODE_ANNOTATION = "devcluster.modelplane.dev/exit-code"
FAULTS = ("ImagePullBackOff", "CrashLoopBackOff", "CreateContainerConfigError")
FAULT_STAGES_DIR = CONTROLPLANE_DIR / "kwok" / "stages"
UPSTREAM_STAGES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)


class StageError(RuntimeError):
    """A stage file is missing or malformed."""


def exclude_faulted(stage: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stage that no longer selects pods carrying one of our fault annotations."""
    narrowed = copy.deepcopy(stage)
    selector = narrowed.setdefault("spec", {}).setdefault("selector", {})
    selector.setdefault("matchExpressions", []).append(
        {"key": f'.metadata.annotations["{FAULT_ANNOTATION}"]', "operator": "NotIn", "values": list(FAULTS)}
    )
    return narrowed


def _load_stage(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StageError(
            f"KWOK stage file {path} is missing (rebuild with `modelplane devcluster build kwok`)"
        )
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or data.get("kind") != "Stage":
        raise StageError(
            f"{path} is not a KWOK Stage (kind: {data.get('kind') if isinstance(data, dict) else data!r})"
        )
    return data


def kwok_documents(upstream_dir: Path, fault_files: Iterable[Path]) -> list[dict[str, Any]]:
    """The documents of KWOK's --config: every stage.

    No KwokConfiguration document: one given in a file skips KWOK's defaulting (its parallelism
    options stay 0 and kwok refuses to start), and the command line carries the options anyway.
    """
    documents: list[dict[str, Any]] = []
    for name in UPSTREAM_STAGES:
        stage = _load_stage(upstream_dir / name)
        documents.append(exclude_faulted(stage) if stage["metadata"]["name"] == "pod-ready" else stage)
    documents += [_load_stage(path) for path in fault_files]
    return documents


def write_kwok_config(path: Path, upstream_dir: Path, fault_dir: Path = FAULT_STAGES_DIR) -> Path:
    documents = kwok_documents(upstream_dir, sorted(fault_dir.glob("*.yaml")))
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path
