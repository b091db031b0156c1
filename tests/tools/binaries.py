"""The Go tools of tests/tools/, built by the devcluster's build table (modelplane.devcluster.build).

``helm`` is upstream Helm from its pinned module (tests/tools/helm); ``kstatus`` is our small checker
around sigs.k8s.io/cli-utils/pkg/kstatus (tests/tools/kstatus). Each lands in
``$MODELPLANE_CACHE/bin/<name>-<version>/`` with a stamp, so a second call is a check, not a build.
``$MODELPLANE_HELM`` / ``$MODELPLANE_KSTATUS`` point at prebuilt binaries instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelplane.devcluster.build import build_tool, tool_named


def _binary(name: str, override_env: str) -> Path:
    override = os.environ.get(override_env)
    if override:
        return Path(override)
    return build_tool(tool_named(name), quiet=True).binary


def helm_binary() -> Path:
    """Helm, built from tests/tools/helm (minutes cold, then cached)."""
    return _binary("helm", "MODELPLANE_HELM")


def kstatus_binary() -> Path:
    """The kstatus checker, built from tests/tools/kstatus."""
    return _binary("kstatus", "MODELPLANE_KSTATUS")


def main() -> None:
    """`python -m tests.tools.binaries`: build both (if needed) and print where they are."""
    for path in (helm_binary(), kstatus_binary()):
        print(path)


if __name__ == "__main__":
    main()
