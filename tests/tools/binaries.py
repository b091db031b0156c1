"""The Go tools of tests/tools/, built by the devcluster's generic Go build into the cache.

``helm`` is upstream Helm from its pinned module (tests/tools/helm); ``kstatus`` is our small checker
around sigs.k8s.io/cli-utils/pkg/kstatus (tests/tools/kstatus). Each lands in
``$MODELPLANE_CACHE/bin/<name>-<version>/`` with a stamp, so a second call is a check, not a build.
``$MODELPLANE_HELM`` / ``$MODELPLANE_KSTATUS`` point at prebuilt binaries instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelplane.devcluster.build import Tool, build_tool

_HELM_VERSION = "helm.sh/helm/v4/internal/version"

HELM = Tool(
    "helm",
    "tests/tools/helm",
    "helm.sh/helm/v4/cmd/helm",
    "helm.sh/helm/v4",
    (
        # What upstream's Makefile stamps, so `helm version` says v4.x.y rather than v4.x.
        f"-X {_HELM_VERSION}.version={{version}}",
        f"-X {_HELM_VERSION}.gitCommit={{commit}}",
        f"-X {_HELM_VERSION}.gitTreeState={{tree_state}}",
    ),
    on_demand=True,
)
KSTATUS = Tool("kstatus", "tests/tools/kstatus", ".", "sigs.k8s.io/cli-utils", on_demand=True)


def _binary(tool: Tool, override_env: str) -> Path:
    override = os.environ.get(override_env)
    if override:
        return Path(override)
    return build_tool(tool, quiet=True).binary


def helm_binary() -> Path:
    """Helm, built from tests/tools/helm (minutes cold, then cached)."""
    return _binary(HELM, "MODELPLANE_HELM")


def kstatus_binary() -> Path:
    """The kstatus checker, built from tests/tools/kstatus."""
    return _binary(KSTATUS, "MODELPLANE_KSTATUS")


def main() -> None:
    """`python -m tests.tools.binaries`: build both and print where they are."""
    for path in (helm_binary(), kstatus_binary()):
        print(path)


if __name__ == "__main__":
    main()
