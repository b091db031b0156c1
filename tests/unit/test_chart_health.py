"""GitOps health of a ModelDeployment: Argo CD's Lua check (run in Lua 5.1) and kstatus (the Go library).

The objects here are built by hand in the shape the operator writes (Ready / Reconciling / Stalled,
each with observedGeneration, and status.observedGeneration); tests/integration/test_gitops.py
judges live objects the same way.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import generate
from tests.tools.binaries import kstatus_binary
from tests.tools.health import argo_health, kstatus


def condition(
    type_: str, status: str, reason: str = "", message: str = "", generation: int | None = 2
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def model(
    conditions: list[dict[str, Any]] | None = None,
    *,
    generation: int | None = 2,
    observed: int | None = 2,
    status: bool = True,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "llm", "namespace": "ml"}
    if generation is not None:
        metadata["generation"] = generation
    obj: dict[str, Any] = {
        "apiVersion": "modelplane.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": metadata,
    }
    if status:
        obj["status"] = {"conditions": conditions or []}
        if observed is not None:
            obj["status"]["observedGeneration"] = observed
    return obj


# The first test may build the Go tool from source (minutes on a cold cache), inside its fixture.
pytestmark = pytest.mark.timeout(1800)

READY = condition("Ready", "True", "Available", "2/2 replicas ready")
NOT_RECONCILING = condition("Reconciling", "False", "Current")
NOT_STALLED = condition("Stalled", "False", "Progressing")

# The statuses the operator writes, and what both GitOps judges must make of them.
AGREED: dict[str, tuple[dict[str, Any], str, str]] = {
    "ready": (model([READY, NOT_RECONCILING, NOT_STALLED]), "Healthy", "Current"),
    "pending on a GPU node": (
        model([
            condition("Ready", "False", "Unschedulable", "0/3 nodes have a free nvidia.com/gpu"),
            condition("Reconciling", "True", "Unschedulable", "waiting for a node with a free GPU"),
            NOT_STALLED,
        ]),
        "Progressing",
        "InProgress",
    ),
    "rolling out a new spec while the old one serves": (
        model([READY, condition("Reconciling", "True", "RollingOut", "1/2 replicas updated"), NOT_STALLED]),
        "Progressing",
        "InProgress",
    ),
    "stalled": (
        model([
            condition("Ready", "False", "ProgressDeadlineExceeded", "no replica became ready in 130 s"),
            condition("Reconciling", "False", "Stalled"),
            condition("Stalled", "True", "ProgressDeadlineExceeded", "no replica became ready in 130 s"),
        ]),
        "Degraded",
        "Failed",
    ),
    "crash looping": (
        model([
            condition("Ready", "False", "CrashLoopBackOff", "model-server restarted 5 times"),
            condition("Stalled", "True", "CrashLoopBackOff", "model-server restarted 5 times"),
        ]),
        "Degraded",
        "Failed",
    ),
    "scaled to zero": (
        model([
            condition("Ready", "True", "ScaledToZero", "scaled to zero replicas: nothing serves the model"),
            NOT_RECONCILING,
            NOT_STALLED,
        ]),
        "Suspended",
        "Current",
    ),
    "status of an older generation": (model([READY, NOT_RECONCILING, NOT_STALLED], generation=3, observed=2), "Progressing", "InProgress"),
}  # fmt: skip


@pytest.fixture(scope="module")
def checker() -> Path:
    return kstatus_binary()


@pytest.mark.parametrize("case", sorted(AGREED))
def test_argo_cd_health(case: str) -> None:
    obj, argo, _ = AGREED[case]
    assert argo_health(obj)["status"] == argo


@pytest.mark.parametrize("case", sorted(AGREED))
def test_kstatus_verdict(checker: Path, case: str) -> None:
    obj, _, expected = AGREED[case]
    assert kstatus(obj, checker)["status"] == expected


def test_messages_say_why() -> None:
    assert (
        argo_health(AGREED["stalled"][0])["message"]
        == "ProgressDeadlineExceeded: no replica became ready in 130 s"
    )
    assert argo_health(AGREED["pending on a GPU node"][0])["message"] == (
        "Unschedulable: waiting for a node with a free GPU"
    )
    assert argo_health(AGREED["ready"][0])["message"] == "Available: 2/2 replicas ready"
    assert argo_health(AGREED["status of an older generation"][0])["message"] == (
        "Waiting for the operator to observe generation 3 (status is for generation 2)"
    )


def test_kstatus_message_comes_from_the_stalled_condition(checker: Path) -> None:
    verdict = kstatus(AGREED["stalled"][0], checker)
    assert verdict["message"] == "no replica became ready in 130 s"
    assert verdict["conditions"][0]["reason"] == "ProgressDeadlineExceeded"


# -- the branches only the Lua check has ---------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [
        (model(status=False), "Progressing", "Waiting for the operator to report status"),
        (model([READY], observed=None), "Progressing", "Waiting for the operator to observe generation 2 (status is for generation nil)"),
        (model([]), "Progressing", "Waiting for the Ready condition"),
        (model([condition("Ready", "False", "Loading", "loading weights")]), "Progressing", "Loading: loading weights"),
        (model([condition("Ready", "Unknown")]), "Progressing", "Not ready"),
        (model([condition("Ready", "True", generation=1)]), "Progressing", "Waiting for the Ready condition of generation 2"),
        (model([condition("Stalled", "True", "Old", "stale", generation=1), READY]), "Healthy", "Available: 2/2 replicas ready"),
        (model([condition("Stalled", "True", "OnlyReason")]), "Degraded", "OnlyReason"),
        (model([condition("Stalled", "True", message="only a message")]), "Degraded", "only a message"),
        (model([condition("Stalled", "True")]), "Degraded", "Stalled"),
        (model([condition("Reconciling", "True")]), "Progressing", "Reconciling"),
        (model([condition("Ready", "True", generation=None)]), "Healthy", "Ready"),
        (model([condition("Ready", "True", "Available")], generation=None, observed=None), "Healthy", "Available"),
        (model([READY], generation=2, observed=5), "Healthy", "Available: 2/2 replicas ready"),
        (model([condition("Ready", "False", "ScaledToZero", generation=1)]), "Progressing", "ScaledToZero"),
        (model([condition("Ready", "False", "ScaledToZero"), condition("Reconciling", "True", "RollingOut")]), "Progressing", "RollingOut"),
    ],
    ids=[
        "no status yet",
        "status without observedGeneration",
        "no conditions",
        "not ready, loading",
        "ready unknown",
        "ready for an older generation",
        "stalled for an older generation",
        "stalled with a reason only",
        "stalled with a message only",
        "stalled with neither",
        "reconciling with neither",
        "ready without a condition generation",
        "no generations at all",
        "observed ahead of generation",
        "scaled to zero for an older generation",
        "scaling up from zero",
    ],
)  # fmt: skip
def test_argo_cd_health_branches(obj: dict[str, Any], status: str, message: str) -> None:
    assert argo_health(obj) == {"status": status, "message": message}


def test_a_condition_order_does_not_matter() -> None:
    stalled = AGREED["stalled"][0]
    reordered = {
        **stalled,
        "status": {**stalled["status"], "conditions": list(reversed(stalled["status"]["conditions"]))},
    }
    assert argo_health(reordered) == argo_health(stalled)


def test_kstatus_reads_ready_false_as_in_progress_so_scaled_to_zero_must_be_ready(checker: Path) -> None:
    """kstatus falls back to the Ready condition: Ready=False with nothing else True is InProgress
    forever (Flux and `helm --wait` would never finish), so a model scaled to zero on purpose must
    report Ready=True; Argo CD shows it as Suspended either way."""
    scaled = model(
        [condition("Ready", "False", "ScaledToZero", "nothing serves"), NOT_RECONCILING, NOT_STALLED]
    )
    assert kstatus(scaled, checker)["status"] == "InProgress"
    assert argo_health(scaled) == {"status": "Suspended", "message": "ScaledToZero: nothing serves"}


def test_kstatus_without_a_status_is_current_so_the_operator_must_write_one_at_once(checker: Path) -> None:
    """kstatus judges a custom resource with no status as Current: only the status makes it honest."""
    assert kstatus(model(status=False), checker)["status"] == "Current"
    assert argo_health(model(status=False))["status"] == "Progressing"


def test_kstatus_checker_reads_yaml_and_rejects_what_is_not_an_object(checker: Path) -> None:
    stalled = yaml.safe_dump(AGREED["stalled"][0])
    result = subprocess.run([str(checker)], input=stalled, capture_output=True, text=True, check=True)
    assert '"status":"Failed"' in result.stdout
    bad = subprocess.run([str(checker)], input="[1, 2]", capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "not one object" in bad.stderr


# -- the argocd-cm snippet is the Lua file --------------------------------------------------------


def test_argocd_cm_patch_carries_the_lua_file_verbatim() -> None:
    patch = yaml.safe_load(generate.ARGOCD_CM_PATCH.read_text())
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    assert list(patch["data"]) == ["resource.customizations.health.modelplane.dev_ModelDeployment"]
    assert patch["data"][generate.ARGOCD_HEALTH_KEY] == generate.HEALTH_LUA.read_text()
    assert generate.ARGOCD_CM_PATCH.read_text() == generate.argocd_cm_patch(generate.HEALTH_LUA.read_text())


def test_the_patched_script_is_the_one_tested(tmp_path: Path) -> None:
    """Run the script as it comes out of the ConfigMap, not the source file."""
    patch = yaml.safe_load(generate.ARGOCD_CM_PATCH.read_text())
    script = tmp_path / "health.lua"
    script.write_text(patch["data"][generate.ARGOCD_HEALTH_KEY])
    for obj, argo, _ in AGREED.values():
        assert argo_health(obj, script)["status"] == argo
