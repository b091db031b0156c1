"""Status computation: every case the cluster can report, as kstatus conditions with the root cause."""

from __future__ import annotations

from typing import Any

import pytest
from modelplane.api.models import ModelDeploymentSpec
from modelplane.render.status import (
    ApplyError,
    Observed,
    compute_status,
    ready_condition,
    status_patch,
    transition_event,
)

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"
SPEC = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m"}, "replicas": 2, "gpu": {"count": 1}})


def deployment(
    *,
    replicas: int = 2,
    ready: int = 2,
    available: int = 2,
    updated: int = 2,
    total: int = 2,
    generation: int = 4,
    observed: int = 4,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "readyReplicas": ready,
            "availableReplicas": available,
            "updatedReplicas": updated,
            "conditions": conditions or [],
        },
    }


def pod(
    name: str = "m-abc-1",
    *,
    phase: str = "Running",
    ready: bool = False,
    conditions: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {
        "metadata": meta,
        "status": {
            "phase": phase,
            "conditions": (conditions or []) + [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": containers or [],
            "initContainerStatuses": init or [],
        },
    }


def waiting(reason: str, message: str, name: str = "model-server", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}},
        **extra,
    }


def status(**kw: Any) -> dict[str, Any]:
    observed = Observed(name="m", namespace="ns", generation=7, spec=kw.pop("spec", SPEC), **kw)
    return compute_status(observed, kw.get("previous"), NOW)


def conditions(result: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in result["conditions"]}


def test_ready_when_rolled_out_and_available() -> None:
    result = status(deployment=deployment(), service={"metadata": {"name": "m"}})
    got = conditions(result)
    assert got["Ready"] == ("True", "Available", "2/2 replicas available")
    assert got["Reconciling"][:2] == ("False", "Reconciled")
    assert got["Stalled"][:2] == ("False", "NotStalled")
    assert result["observedGeneration"] == 7
    assert all(c["observedGeneration"] == 7 and c["lastTransitionTime"] == NOW for c in result["conditions"])
    assert result["replicas"] == 2
    assert result["readyReplicas"] == 2
    assert result["selector"] == "modelplane.dev/model-deployment=m"
    assert result["endpoints"] == {"http": "http://m.ns.svc:8000", "grpc": "m.ns.svc:8001"}
    assert result["gpu"] == "1x gpu"


@pytest.mark.parametrize(
    "dep",
    [
        deployment(observed=3),  # the controller has not seen the new generation yet
        deployment(updated=1, available=2, total=3),  # old replicas still around
        deployment(available=1),
    ],
)
def test_not_ready_until_the_new_generation_is_available(dep: dict[str, Any]) -> None:
    got = conditions(status(deployment=dep))
    assert got["Ready"][:2] == ("False", "RollingOut")
    assert got["Reconciling"][:2] == ("True", "RollingOut")
    assert got["Stalled"][0] == "False"


def test_unschedulable_quotes_the_scheduler() -> None:
    message = "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) had untolerated taint."
    pending = pod(
        phase="Pending",
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ],
    )
    got = conditions(status(deployment=deployment(available=0, ready=0), pods=[pending]))
    assert got["Ready"] == ("False", "Unschedulable", message)
    assert got["Reconciling"] == ("True", "Unschedulable", message)
    assert got["Stalled"][0] == "False"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("ImagePullBackOff", "ImagePullBackOff"),
        ("ErrImagePull", "ImagePullBackOff"),
        ("CrashLoopBackOff", "CrashLoopBackOff"),
        ("CreateContainerConfigError", "CreateContainerConfigError"),
        ("InvalidImageName", "InvalidImageName"),
    ],
)
def test_container_waiting_failures(reason: str, expected: str) -> None:
    kubelet = f"kubelet says {reason}"
    failing = pod(containers=[waiting(reason, kubelet)])
    got = conditions(
        status(deployment=deployment(available=1, ready=1), pods=[pod("m-ok", ready=True), failing])
    )
    assert got["Ready"][:2] == ("False", expected)
    assert expected in got["Ready"][2]
    assert "m-abc-1" in got["Ready"][2]
    if reason != "CrashLoopBackOff":  # the back-off text changes on every restart: left out
        assert kubelet in got["Ready"][2]
    assert got["Reconciling"][:2] == ("True", expected)


def test_retries_do_not_change_the_message() -> None:
    def message(container: dict[str, Any]) -> str:
        result = status(deployment=deployment(available=0), pods=[pod(containers=[container])])
        return str(ready_condition(result)["message"])

    last = {"terminated": {"exitCode": 1, "reason": "Error", "message": "boom"}}
    assert message(
        waiting("CrashLoopBackOff", "back-off 10s restarting", restartCount=1, lastState=last)
    ) == message(waiting("CrashLoopBackOff", "back-off 5m0s restarting", restartCount=9, lastState=last))
    error = "rpc error: code = NotFound desc = not found"
    pulling = message(waiting("ErrImagePull", error, image="x:1"))
    backing_off = message(
        waiting("ImagePullBackOff", f'Back-off pulling image "x:1": ErrImagePull: {error}', image="x:1")
    )
    assert pulling == backing_off
    assert error in pulling


def test_autoscaled_is_not_ready_below_min_replicas() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "s3://b/m"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}
    )
    one = deployment(replicas=1, ready=1, available=1, updated=1, total=1)
    assert ready_condition(status(spec=spec, deployment=one))["status"] == "False"
    assert ready_condition(status(spec=spec, deployment=deployment()))["status"] == "True"


def test_missing_credentials_secret_in_the_fetch_container() -> None:
    failing = pod(
        phase="Pending",
        init=[waiting("CreateContainerConfigError", 'secret "s3-creds" not found', name="model-fetch")],
    )
    ready = ready_condition(status(deployment=deployment(available=0), pods=[failing]))
    assert ready["reason"] == "CreateContainerConfigError"
    assert ready["message"] == (
        "CreateContainerConfigError: model fetch (init container model-fetch) of pod "
        f'{failing["metadata"]["name"]}: secret "s3-creds" not found; create it in the namespace or '
        "change spec.model.credentialsSecret"
    )
    # The same error on the server container (its env from spec.runtime.env) has no such hint.
    server = pod(containers=[waiting("CreateContainerConfigError", 'secret "tok" not found')])
    message = ready_condition(status(deployment=deployment(available=0), pods=[server]))["message"]
    assert message.endswith(
        f'container model-server of pod {server["metadata"]["name"]}: secret "tok" not found'
    )


def test_crash_loop_carries_the_last_exit_and_oom_is_named() -> None:
    crash = waiting(
        "CrashLoopBackOff",
        "back-off 40s",
        restartCount=3,
        lastState={"terminated": {"exitCode": 1, "reason": "Error", "message": "ValueError: bad model"}},
    )
    ready = ready_condition(status(deployment=deployment(available=0), pods=[pod(containers=[crash])]))
    assert ready["reason"] == "CrashLoopBackOff"
    assert "last exit code 1" in ready["message"]
    assert "ValueError: bad model" in ready["message"]
    oom = waiting(
        "CrashLoopBackOff",
        "back-off",
        restartCount=2,
        lastState={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    )
    ready = ready_condition(status(deployment=deployment(available=0), pods=[pod(containers=[oom])]))
    assert ready["reason"] == "OOMKilled"
    assert "137" in ready["message"]
    assert "limits.memory" in ready["message"]


def test_failures_outrank_scheduling_and_progress() -> None:
    pending = pod(
        "m-a",
        phase="Pending",
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no nodes"}
        ],
    )
    failing = pod("m-b", containers=[waiting("ImagePullBackOff", "pull failed")])
    assert ready_condition(status(deployment=deployment(available=0), pods=[pending, failing]))["reason"] == (
        "ImagePullBackOff"
    )


def test_terminating_pods_are_ignored() -> None:
    gone = pod(containers=[waiting("CrashLoopBackOff", "x")], deleting=True)
    assert ready_condition(status(deployment=deployment(), pods=[gone]))["reason"] == "Available"


def test_progress_reasons_fetching_and_loading() -> None:
    fetching = pod(phase="Pending", init=[{"name": "model-fetch", "ready": False, "state": {"running": {}}}])
    assert (
        ready_condition(status(deployment=deployment(available=0), pods=[fetching]))["reason"]
        == "FetchingModel"
    )
    loading = pod(containers=[{"name": "model-server", "ready": False, "state": {"running": {}}}])
    assert (
        ready_condition(status(deployment=deployment(available=0), pods=[loading]))["reason"]
        == "LoadingModel"
    )


def test_progress_deadline_exceeded_is_stalled() -> None:
    dep = deployment(
        available=0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "m-1" has timed out progressing.',
            }
        ],
    )
    got = conditions(status(deployment=dep))
    assert got["Stalled"] == (
        "True",
        "ProgressDeadlineExceeded",
        'ReplicaSet "m-1" has timed out progressing.',
    )
    assert got["Reconciling"][0] == "False"
    assert got["Ready"][:2] == ("False", "ProgressDeadlineExceeded")
    # With a known root cause, Ready names it while Stalled says why it stopped.
    crash = pod(containers=[waiting("CrashLoopBackOff", "back-off")])
    got = conditions(status(deployment=dep, pods=[crash]))
    assert got["Ready"][1] == "CrashLoopBackOff"
    assert got["Stalled"][:2] == ("True", "ProgressDeadlineExceeded")


def test_replica_failure_when_no_pod_is_created() -> None:
    dep = deployment(
        available=0,
        total=0,
        ready=0,
        updated=0,
        conditions=[
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": 'pods "m-1" is forbidden: exceeded quota: gpu',
            }
        ],
    )
    assert conditions(status(deployment=dep))["Ready"] == (
        "False",
        "FailedCreate",
        'pods "m-1" is forbidden: exceeded quota: gpu',
    )


def test_scaled_to_zero_is_ready_with_its_own_reason() -> None:
    """Zero replicas on purpose is done, not pending: kstatus reads Ready=False as InProgress forever."""
    zero = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m"}, "replicas": 0})
    got = conditions(
        status(spec=zero, deployment=deployment(replicas=0, ready=0, available=0, updated=0, total=0))
    )
    assert got["Ready"][:2] == ("True", "ScaledToZero")
    assert got["Reconciling"][0] == "False"
    assert got["Stalled"][0] == "False"


def test_invalid_spec_is_stalled() -> None:
    got = conditions(status(spec=None, spec_error="spec.gpu.count: must be absent or 1"))
    assert got["Ready"][:2] == ("False", "InvalidSpec")
    assert "spec.gpu.count" in got["Ready"][2]
    assert got["Stalled"][:2] == ("True", "InvalidSpec")
    assert got["Reconciling"][0] == "False"


def test_apply_errors() -> None:
    rejected = status(
        deployment=deployment(), apply_error=ApplyError("Deployment", "m", "spec.template: bad", True)
    )
    assert conditions(rejected)["Ready"][:2] == ("False", "InvalidSpec")
    assert conditions(rejected)["Stalled"][0] == "True"
    flaky = status(deployment=deployment(), apply_error=ApplyError("Service", "m", "etcd timeout", False))
    assert conditions(flaky)["Ready"][:2] == ("False", "ApplyFailed")
    assert conditions(flaky)["Reconciling"][0] == "True"
    assert "etcd timeout" in conditions(flaky)["Ready"][2]


def test_last_transition_time_is_kept_while_the_status_holds() -> None:
    first = status(deployment=deployment())
    again = compute_status(Observed("m", "ns", 8, SPEC, deployment=deployment()), first, LATER)
    assert [c["lastTransitionTime"] for c in again["conditions"]] == [NOW, NOW, NOW]
    broken = compute_status(Observed("m", "ns", 8, SPEC, deployment=deployment(available=1)), first, LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in broken["conditions"]}
    assert times == {"Ready": LATER, "Reconciling": LATER, "Stalled": NOW}


def test_status_patch_only_when_something_changed() -> None:
    first = status(deployment=deployment(), service={})
    assert status_patch(first, first) is None
    assert status_patch({**first, "extra": None}, first) is None
    changed = status(deployment=deployment(available=1), service={})
    patch = status_patch(first, changed)
    assert patch is not None
    assert patch["status"]["conditions"] == changed["conditions"]  # the whole list
    no_service = status(deployment=deployment())
    assert status_patch(first, no_service) == {"status": {"endpoints": None, **no_service}}


def test_events_only_on_ready_transitions() -> None:
    ready = status(deployment=deployment())
    assert transition_event(ready, ready) is None
    assert transition_event(None, ready) == ("Normal", "Available", "2/2 replicas available")
    failing = status(
        deployment=deployment(available=0), pods=[pod(containers=[waiting("ImagePullBackOff", "x")])]
    )
    event = transition_event(ready, failing)
    assert event is not None
    assert event[:2] == ("Warning", "ImagePullBackOff")
    rolling = status(deployment=deployment(available=1))
    assert transition_event(ready, rolling) == ("Normal", "RollingOut", conditions(rolling)["Ready"][2])
