"""Judge a ModelDeployment the way GitOps tools do: Argo CD's Lua health check and kstatus.

Both run the real thing: the Lua file Argo CD gets (charts/argocd/modeldeployment-health.lua) in a
Lua 5.1 interpreter, as Argo CD's gopher-lua is, and the kstatus library through the Go checker.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.tools.generate import HEALTH_LUA


def _to_lua(runtime: Any, value: Any) -> Any:
    """JSON-shaped Python data as Lua tables (lists become 1-based sequences, as in Argo CD)."""
    if isinstance(value, dict):
        return runtime.table_from({key: _to_lua(runtime, item) for key, item in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, item) for item in value])
    return value


def argo_health(obj: dict[str, Any], script: Path = HEALTH_LUA) -> dict[str, str]:
    """Run the health check on one object: {"status": Healthy|Progressing|Degraded|..., "message": ...}."""
    import lupa.lua51

    runtime = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    # Argo CD's sandbox has no os/io; take them away so the script cannot depend on them.
    runtime.execute("os = nil; io = nil; require = nil; dofile = nil; loadfile = nil")
    runtime.globals().obj = _to_lua(runtime, obj)
    result = runtime.execute(script.read_text())
    if result is None:
        raise AssertionError(f"{script.name} returned nothing for {obj.get('metadata', {}).get('name')}")
    return {"status": str(result["status"]), "message": str(result["message"] or "")}


def kstatus(obj: dict[str, Any], binary: Path) -> dict[str, Any]:
    """kstatus' verdict on one object: {"status": Current|InProgress|Failed|..., "message": ..., ...}."""
    result = subprocess.run(
        [str(binary)], input=json.dumps(obj), capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"kstatus checker failed ({result.returncode}): {result.stderr.strip()}")
    verdict: dict[str, Any] = json.loads(result.stdout)
    return verdict
