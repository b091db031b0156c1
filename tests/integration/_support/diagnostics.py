"""What a failed integration test prints: the ModelDeployments, their children, pods, events, and
the operator's log, so the failure explains itself without rerunning."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from modelplane.devcluster.procs import tail

from tests.integration._support.kube import Kubectl, KubectlError

CHILD_KINDS = "deployments,replicasets,services,poddisruptionbudgets,horizontalpodautoscalers"


def _section(title: str, body: str) -> str:
    return f"----- {title} -----\n{body.rstrip() or '(none)'}\n"


def _safe(kubectl: Kubectl, *args: str) -> str:
    try:
        return kubectl(*args)
    except (KubectlError, OSError) as error:
        return f"({error})"
    except Exception as error:  # a timeout must not hide the test's own failure
        return f"({type(error).__name__}: {error})"


def pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod's status without the noise: phase, node, conditions, container states."""
    status = pod.get("status", {})
    return {
        "name": pod["metadata"]["name"],
        "node": pod.get("spec", {}).get("nodeName"),
        "annotations": {
            k: v for k, v in (pod["metadata"].get("annotations") or {}).items() if "modelplane" in k
        },
        "phase": status.get("phase"),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message") if c.get(k)}
            for c in status.get("conditions") or []
        ],
        "containerStatuses": [
            {
                k: c.get(k)
                for k in ("name", "ready", "restartCount", "state", "lastState")
                if c.get(k) is not None
            }
            for c in status.get("containerStatuses") or []
        ],
    }


def collect(kubectl: Kubectl, namespaces: Iterable[str], operator_logs: Iterable[Path] = ()) -> str:
    parts = []
    for namespace in namespaces:
        ns = ["-n", namespace]
        parts.append(
            _section(
                f"ModelDeployments in {namespace}",
                _safe(kubectl, "get", "modeldeployments", *ns, "-o", "yaml"),
            )
        )
        parts.append(
            _section(f"children in {namespace}", _safe(kubectl, "get", CHILD_KINDS, *ns, "-o", "wide"))
        )
        parts.append(
            _section(
                f"deployments in {namespace} (YAML)", _safe(kubectl, "get", "deployments", *ns, "-o", "yaml")
            )
        )
        try:
            pods = kubectl.json("get", "pods", *ns)["items"]
            body = yaml.safe_dump([pod_summary(p) for p in pods], sort_keys=False, width=200)
        except Exception as error:  # diagnostics never raise
            body = f"({error})"
        parts.append(_section(f"pods in {namespace}", body))
        parts.append(
            _section(
                f"events in {namespace} (oldest first)",
                _safe(kubectl, "get", "events", *ns, "--sort-by=.metadata.creationTimestamp"),
            )
        )
    for log in operator_logs:
        parts.append(_section(f"operator log {log} (tail)", tail(log, 80)))
    return "\n".join(parts)
