"""GitOps verdicts on LIVE ModelDeployments: kstatus (the Go library Flux uses) and Argo CD's Lua check.

The shared operator reconciles real ModelDeployments on the control plane; each verdict is taken from
the object as the API server returns it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration._support.kube import Kubectl, WaitTimeout, condition, wait_for
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import mdep
from tests.integration._support.operator_faults import DeadlineModels
from tests.tools.binaries import kstatus_binary
from tests.tools.health import argo_health, kstatus

# The first test may build the kstatus checker (a minute on a cold cache) inside its fixture.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def checker() -> Path:
    return kstatus_binary()


def judged(kubectl: Kubectl, namespace: str, name: str, checker: Path) -> tuple[str, str, dict[str, Any]]:
    obj: dict[str, Any] = kubectl.get("modeldeployment", name, namespace)
    return kstatus(obj, checker)["status"], argo_health(obj)["status"], obj


def wait_verdict(
    kubectl: Kubectl, namespace: str, name: str, checker: Path, expected: tuple[str, str], timeout: float
) -> dict[str, Any]:
    """Wait until both judges agree on `expected` = (kstatus, Argo CD); returns the object then."""
    last: list[Any] = []

    def agreed() -> dict[str, Any] | None:
        status, health, obj = judged(kubectl, namespace, name, checker)
        last[:] = [(status, health), (obj.get("status") or {}).get("conditions")]
        return obj if (status, health) == expected else None

    try:
        return wait_for(agreed, timeout, f"{namespace}/{name} to be judged {expected}")
    except WaitTimeout as error:
        raise AssertionError(
            f"{error}\nlast verdict (kstatus, Argo CD): {last[:1]}, conditions: {last[1:]}"
        ) from None


def test_ready_is_current_and_healthy(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, checker: Path
) -> None:
    kubectl.apply(mdep("ready"), namespace=namespace)
    obj = wait_verdict(kubectl, namespace, "ready", checker, ("Current", "Healthy"), 120)
    ready = condition(obj, "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def test_pending_on_a_gpu_is_in_progress_and_progressing(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, checker: Path
) -> None:
    """No node has this GPU: pods stay Pending (a cluster autoscaler might still add one)."""
    kubectl.apply(mdep("pending", gpu={"count": 1, "product": ["NVIDIA-B200"]}), namespace=namespace)
    obj = wait_verdict(kubectl, namespace, "pending", checker, ("InProgress", "Progressing"), 120)
    reconciling = condition(obj, "Reconciling")
    assert reconciling is not None
    assert reconciling["status"] == "True"
    assert argo_health(obj)["message"].startswith(reconciling["reason"])


def test_a_spec_change_is_in_progress_until_observed_then_current_again(
    operator_factory: Callable[..., OperatorProcess], kubectl: Kubectl, namespace: str, checker: Path
) -> None:
    operator = operator_factory().start()
    kubectl.apply(mdep("changed"), namespace=namespace)
    wait_verdict(kubectl, namespace, "changed", checker, ("Current", "Healthy"), 120)
    operator.stop()  # the status now describes the old generation
    try:
        kubectl(
            "patch", "modeldeployment", "changed", "-n", namespace, "--type=merge",
            "-p", '{"spec": {"resources": {"requests": {"cpu": "200m"}}}}',
        )  # fmt: skip
        status, health, obj = judged(kubectl, namespace, "changed", checker)
        assert obj["metadata"]["generation"] > obj["status"]["observedGeneration"]
        assert (status, health) == ("InProgress", "Progressing")
    finally:
        operator.start()
    wait_verdict(kubectl, namespace, "changed", checker, ("Current", "Healthy"), 120)


def test_stalled_is_failed_and_degraded(
    operator: OperatorProcess, kubectl: Kubectl, checker: Path, deadline_models: DeadlineModels
) -> None:
    """Past the progress deadline the operator reports Stalled; both kinds of stall, side by side:
    a crash-looping pod and one no node can take (the session's `deadline_models`)."""
    namespace = deadline_models.namespace
    for name in ("crash-loop", "unschedulable"):
        obj = wait_verdict(
            kubectl, namespace, name, checker, ("Failed", "Degraded"), deadline_models.time_left()
        )
        stalled = condition(obj, "Stalled")
        assert stalled is not None
        assert stalled["status"] == "True"
        assert stalled["message"]
        assert argo_health(obj)["message"].endswith(stalled["message"])
        assert kstatus(obj, checker)["message"] == stalled["message"]


def test_scaled_to_zero_is_current_and_suspended(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, checker: Path
) -> None:
    kubectl.apply(mdep("idle", replicas=0), namespace=namespace)
    wait_verdict(kubectl, namespace, "idle", checker, ("Current", "Suspended"), 60)
