"""Where the devcluster finds its sources and keeps its outputs.

Build outputs and Go caches live outside git, under ``$MODELPLANE_CACHE`` (default
``~/.cache/modelplane``), so a fresh clone reuses them and ``git clean`` never costs a rebuild.
"""

from __future__ import annotations

import os
from pathlib import Path

# operator/modelplane/devcluster/paths.py -> the repository root is three folders up from here.
REPO_ROOT = Path(__file__).resolve().parents[3]
CONTROLPLANE_DIR = REPO_ROOT / "tests" / "controlplane"
DEFAULT_STATE_DIR = REPO_ROOT / ".devcluster"
OPERATOR_RULES = REPO_ROOT / "charts" / "modelplane" / "files" / "operator-rules.yaml"
CRDS_DIR = REPO_ROOT / "crds"


def cache_dir() -> Path:
    """The cache root: ``$MODELPLANE_CACHE`` or ``~/.cache/modelplane``."""
    value = os.environ.get("MODELPLANE_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "modelplane"


def go_env(cache: Path) -> dict[str, str]:
    """Go's module and build caches under our cache root, and a build that needs no C toolchain."""
    return {
        "GOMODCACHE": str(cache / "go" / "mod"),
        "GOCACHE": str(cache / "go" / "build"),
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        # -modcacherw: the module cache stays deletable; -mod=readonly: go.mod/go.sum are the pin.
        "GOFLAGS": "-modcacherw -mod=readonly -buildvcs=false",
    }
