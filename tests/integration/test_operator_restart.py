"""Killed in the middle of its work, the operator picks up where the cluster is and converges.

Reconciles are level-based and children have fixed names and one field manager, so a restart can
neither duplicate a child nor lose one; the test kills it with SIGKILL (no clean-up at all) while it
is still creating the children of a batch of ModelDeployments.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.integration._support.kube import Kubectl, condition, wait_for
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import controller_ref, is_current, mdep

MODELS = [f"model-{index:02d}" for index in range(10)]
REPLICAS = 2


def _ready(obj: dict[str, Any]) -> bool:
    found = condition(obj, "Ready")
    return bool(found and found["status"] == "True" and is_current(obj))


def _owners(kubectl: Kubectl, resource: str, namespace: str) -> Counter[str]:
    """How many objects of `resource` each owner (by uid) controls."""
    return Counter(
        str((controller_ref(item) or {}).get("uid")) for item in kubectl.get(resource, namespace=namespace)
    )


def test_killed_mid_reconcile_it_converges_without_duplicates(
    operator_factory: Callable[..., OperatorProcess], kubectl: Kubectl, namespace: str
) -> None:
    # One worker, so the batch takes long enough to be interrupted part way.
    operator = operator_factory(namespaces=[namespace], extra_args=["--workers", "1"])
    kubectl.apply([mdep(name, replicas=REPLICAS) for name in MODELS], namespace)
    offset = operator.log.stat().st_size if operator.log.exists() else 0

    operator.start()

    def creating() -> bool:
        with operator.log.open() as handle:
            handle.seek(offset)
            return "Created Deployment" in handle.read()

    wait_for(creating, 30, "the operator's first child", interval=0.01, max_interval=0.02)
    operator.kill()

    # What it left: some children, and models it never got to.
    deployments = {d["metadata"]["name"] for d in kubectl.get("deployments", namespace=namespace)}
    statuses = {m["metadata"]["name"]: m.get("status") for m in kubectl.get("mdep", namespace=namespace)}
    untouched = sorted(name for name, status in statuses.items() if not status)
    assert deployments, "killed before it created anything"
    assert untouched, "the operator finished before it was killed: nothing was interrupted"

    operator.start()

    def all_ready() -> dict[str, dict[str, Any]] | None:
        found = {m["metadata"]["name"]: m for m in kubectl.get("mdep", namespace=namespace)}
        return found if all(_ready(found[name]) for name in MODELS) else None

    models = wait_for(all_ready, 120, f"all {len(MODELS)} ModelDeployments to be Ready after the restart")

    # Exactly one child of each kind per model, each controlled by it; one ReplicaSet per Deployment
    # (a second would mean the restarted operator rendered another pod template); the pods.
    uids = {name: models[name]["metadata"]["uid"] for name in MODELS}
    for resource in ("deployments", "services", "poddisruptionbudgets"):
        owners = _owners(kubectl, resource, namespace)
        assert owners == Counter(uids.values()), f"{resource}: {dict(owners)} for models {uids}"
    deployment_uids = {d["metadata"]["uid"] for d in kubectl.get("deployments", namespace=namespace)}
    assert _owners(kubectl, "replicasets", namespace) == Counter(deployment_uids)
    wait_for(
        lambda: len(kubectl.get("pods", namespace=namespace)) == REPLICAS * len(MODELS),
        30,
        f"{REPLICAS} pods per model",
    )

    # Nothing created twice (an event may be missing if the kill came between an apply and its event).
    created = Counter(
        (e["involvedObject"]["name"], e["message"])
        for e in kubectl.get("events", namespace=namespace, field_selector="reason=Created")
        if e["involvedObject"]["kind"] == "ModelDeployment"
    )
    assert all(count == 1 for count in created.values()), {k: v for k, v in created.items() if v > 1}
