"""Status from what the cluster reports: spec + observed children + pods -> status (pure).

The conditions follow kstatus: a resource is Current when status.observedGeneration matches and
neither Reconciling nor Stalled is True. So:

- Ready=True only when the Deployment has rolled out the newest generation and every replica is
  available (with reason ScaledToZero when that is zero replicas, asked for);
- Reconciling=True while the workload is still converging (rolling out, pods pending while a cluster
  autoscaler may add GPU nodes, images pulling, crash loops the kubelet keeps retrying);
- Stalled=True when it cannot converge without a change: the spec is invalid, or the Deployment's
  progress deadline (derived from spec.startup.maxLoadSeconds) has passed.

The Ready message names the root cause, taken from where Kubernetes put it: the scheduler's
PodScheduled message, the kubelet's container waiting reason and message, the last termination.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelplane.api.models import GRPC_PORT, HTTP_PORT, ModelDeploymentSpec
from modelplane.render.children import FETCH_CONTAINER, gpu_summary, min_replicas, selector_string

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (READY, RECONCILING, STALLED)

# Reasons (the Ready condition's, unless noted).
AVAILABLE = "Available"
SCALED_TO_ZERO = "ScaledToZero"
ROLLING_OUT = "RollingOut"
PENDING = "Pending"
UNSCHEDULABLE = "Unschedulable"
FETCHING_MODEL = "FetchingModel"
LOADING_MODEL = "LoadingModel"
OOM_KILLED = "OOMKilled"
FAILED_CREATE = "FailedCreate"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
INVALID_SPEC = "InvalidSpec"
APPLY_FAILED = "ApplyFailed"
RECONCILED = "Reconciled"  # Reconciling=False
NOT_STALLED = "NotStalled"  # Stalled=False

# Container waiting reasons that mean something is wrong (not just starting).
FAILING_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "PreStartHookError",
        "PostStartHookError",
    }
)
# Ready reasons worth a Warning event when they appear.
WARNING_REASONS = FAILING_WAITING_REASONS | {
    UNSCHEDULABLE,
    OOM_KILLED,
    FAILED_CREATE,
    PROGRESS_DEADLINE_EXCEEDED,
    INVALID_SPEC,
    APPLY_FAILED,
}


@dataclass(frozen=True)
class ApplyError:
    """A child the API server refused. `permanent`: only a spec change can fix it (HTTP 400/422)."""

    kind: str
    name: str
    message: str
    permanent: bool


@dataclass(frozen=True)
class Cause:
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """Everything the status is computed from."""

    name: str
    namespace: str
    generation: int
    spec: ModelDeploymentSpec | None
    spec_error: str | None = None
    deployment: Mapping[str, Any] | None = None
    service: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    apply_error: ApplyError | None = None


def _condition(type_: str, true: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if true else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def _find_condition(status: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    """The first condition of that type in a status (of a pod, Deployment or ModelDeployment), or {}."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return {}


# -- root causes from pods ----------------------------------------------------------------------


def _container_statuses(pod: Mapping[str, Any]) -> Iterable[tuple[bool, Mapping[str, Any]]]:
    status = pod.get("status") or {}
    for item in status.get("initContainerStatuses") or []:
        yield True, item
    for item in status.get("containerStatuses") or []:
        yield False, item


def _describe(container: str, init: bool) -> str:
    if init and container == FETCH_CONTAINER:
        return f"model fetch (init container {container})"
    return f"{'init container' if init else 'container'} {container}"


_BACK_OFF_PREFIX = re.compile(r'^Back-off pulling image "[^"]*":\s*(ErrImagePull:\s*)?')


def _crash_message(who: str, pod_name: str, last: Mapping[str, Any]) -> str:
    """The crash loop in stable words: the last exit, not the kubelet's growing back-off or restart count
    (those change on every restart and would turn into a status write each time)."""
    message = f"CrashLoopBackOff: {who} of pod {pod_name} keeps exiting"
    if last:
        message += f": last exit code {last.get('exitCode', '?')}"
        message += f" ({last['reason']})" if last.get("reason") else ""
        message += f": {str(last['message']).strip()[-2000:]}" if last.get("message") else ""
    return message


def container_failure(pod: Mapping[str, Any]) -> Cause | None:
    """A container the kubelet cannot start or keep running, with its reason and message.

    ErrImagePull and ImagePullBackOff alternate on every pull retry; both are reported as
    ImagePullBackOff with the same detail, so the status does not flip with each retry.
    """
    pod_name = (pod.get("metadata") or {}).get("name", "?")
    for init, item in _container_statuses(pod):
        state = item.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        who = _describe(item.get("name", "?"), init)
        last = (item.get("lastState") or {}).get("terminated") or {}
        terminated = state.get("terminated") or {}
        detail = str(waiting.get("message") or "")
        if reason == "CrashLoopBackOff":
            message = _crash_message(who, pod_name, last)
            if last.get("reason") == OOM_KILLED:
                return Cause(OOM_KILLED, message + "; raise spec.resources.limits.memory")
            return Cause(reason, message)
        if reason in ("ErrImagePull", "ImagePullBackOff"):
            detail = _BACK_OFF_PREFIX.sub("", detail)
            image = item.get("image")
            message = f"ImagePullBackOff: {who} of pod {pod_name} cannot pull image" + (
                f" {image}" if image else ""
            )
            return Cause("ImagePullBackOff", message + (f": {detail}" if detail else ""))
        if reason in FAILING_WAITING_REASONS:
            message = f"{reason}: {who} of pod {pod_name}" + (f": {detail}" if detail else "")
            # The fetch container's only Secret is the model's credentials: say which field names it.
            fetch = init and item.get("name") == FETCH_CONTAINER
            if reason == "CreateContainerConfigError" and fetch and detail.startswith('secret "'):
                message += "; create it in the namespace or change spec.model.credentialsSecret"
            return Cause(reason, message)
        if terminated.get("reason") == OOM_KILLED:
            return Cause(
                OOM_KILLED,
                f"OOMKilled: {who} of pod {pod_name} ran out of memory (exit code "
                f"{terminated.get('exitCode', 137)}); raise spec.resources.limits.memory",
            )
    return None


def _unschedulable(pod: Mapping[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return str(condition.get("message") or "the scheduler found no node for the pod")
    return None


def _progress(pod: Mapping[str, Any], spec: ModelDeploymentSpec | None) -> Cause | None:
    """Where a healthy but not yet ready pod is: fetching, loading, or waiting to be scheduled."""
    pod_name = (pod.get("metadata") or {}).get("name", "?")
    for init, item in _container_statuses(pod):
        if init and not item.get("ready") and "running" in (item.get("state") or {}):
            return Cause(FETCHING_MODEL, f"pod {pod_name} is fetching the model")
    for init, item in _container_statuses(pod):
        if not init and not item.get("ready") and "running" in (item.get("state") or {}):
            return Cause(LOADING_MODEL, f"pod {pod_name} is loading the model")
    if (pod.get("status") or {}).get("phase") == "Pending":
        return Cause(PENDING, f"pod {pod_name} is pending")
    return None


def _live_pods(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return sorted(live, key=lambda p: (p.get("metadata") or {}).get("name", ""))


def root_cause(pods: Iterable[Mapping[str, Any]], spec: ModelDeploymentSpec | None) -> Cause | None:
    """The most telling reason the pods are not ready: failures first, then scheduling, then progress."""
    live = _live_pods(pods)
    for pod in live:
        failure = container_failure(pod)
        if failure is not None:
            return failure
    unschedulable = [(p, m) for p in live if (m := _unschedulable(p)) is not None]
    if unschedulable:
        return Cause(UNSCHEDULABLE, unschedulable[0][1])
    for pod in live:
        if not _pod_ready(pod):
            progress = _progress(pod, spec)
            if progress is not None:
                return progress
    return None


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return _find_condition(pod.get("status"), "Ready").get("status") == "True"


# -- the Deployment -----------------------------------------------------------------------------


def _deployment_condition(deployment: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return _find_condition(deployment.get("status"), type_)


@dataclass(frozen=True)
class Rollout:
    desired: int
    replicas: int
    ready: int
    available: int
    updated: int
    current_generation: bool

    @property
    def complete(self) -> bool:
        return (
            self.current_generation
            and self.updated >= self.desired
            and self.replicas <= self.updated
            and self.available >= self.desired
        )


def rollout(deployment: Mapping[str, Any], model: ModelDeploymentSpec | None = None) -> Rollout:
    """The Deployment's progress. With autoscaling, fewer replicas than minReplicas is not done yet (the
    HPA raises a new Deployment from 1 to minReplicas shortly after it appears)."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    desired = int(spec.get("replicas", 1))
    if model is not None and model.autoscaling is not None:
        desired = max(desired, min_replicas(model))
    return Rollout(
        desired=desired,
        replicas=int(status.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        current_generation=int(status.get("observedGeneration") or 0) >= int(generation),
    )


# -- putting it together ------------------------------------------------------------------------


def _conditions(observed: Observed) -> list[dict[str, Any]]:
    gen = observed.generation

    def result(
        ready: Cause | None, reconciling: Cause | None, stalled: Cause | None, *, is_ready: bool = False
    ) -> list[dict[str, Any]]:
        assert ready is not None
        return [
            _condition(READY, is_ready, ready.reason, ready.message, gen),
            _condition(
                RECONCILING,
                reconciling is not None,
                reconciling.reason if reconciling else RECONCILED,
                reconciling.message if reconciling else "",
                gen,
            ),
            _condition(
                STALLED,
                stalled is not None,
                stalled.reason if stalled else NOT_STALLED,
                stalled.message if stalled else "",
                gen,
            ),
        ]

    if observed.spec is None or observed.spec_error is not None:
        cause = Cause(INVALID_SPEC, f"invalid spec: {observed.spec_error}")
        return result(cause, None, cause)

    if observed.apply_error is not None:
        error = observed.apply_error
        if error.permanent:
            cause = Cause(INVALID_SPEC, f"the API server rejected {error.kind} {error.name}: {error.message}")
            return result(cause, None, cause)
        cause = Cause(APPLY_FAILED, f"applying {error.kind} {error.name} failed: {error.message}")
        return result(cause, cause, None)

    deployment = observed.deployment
    if deployment is None:
        cause = Cause(PENDING, "waiting for the Deployment to be created")
        return result(cause, cause, None)

    state = rollout(deployment, observed.spec)
    if state.complete:
        if state.desired == 0:
            # Done as asked, like a Deployment of zero replicas is Available: Ready=False would read as
            # in progress forever to kstatus (Flux, `helm --wait`); the reason says nothing serves.
            cause = Cause(SCALED_TO_ZERO, "scaled to zero replicas: nothing serves the model")
            return result(cause, None, None, is_ready=True)
        return result(
            Cause(AVAILABLE, f"{state.available}/{state.desired} replicas available"),
            None,
            None,
            is_ready=True,
        )

    found = root_cause(observed.pods, observed.spec)
    failure = _deployment_condition(deployment, "ReplicaFailure")
    if found is None and failure.get("status") == "True":
        found = Cause(FAILED_CREATE, str(failure.get("message") or "the ReplicaSet could not create pods"))
    cause = found or Cause(
        ROLLING_OUT,
        f"rolling out: {state.updated}/{state.desired} replicas updated, {state.available} available",
    )

    progressing = _deployment_condition(deployment, "Progressing")
    if state.current_generation and progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        deadline = Cause(
            PROGRESS_DEADLINE_EXCEEDED,
            str(progressing.get("message") or "the Deployment exceeded its progress deadline"),
        )
        if cause.reason == ROLLING_OUT:
            cause = deadline
        return result(cause, None, deadline)
    return result(cause, cause, None)


def _keep_transition_times(
    conditions: list[dict[str, Any]], previous: Iterable[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    out = []
    for condition in conditions:
        old = before.get(condition["type"])
        same = old is not None and old.get("status") == condition["status"] and old.get("lastTransitionTime")
        out.append({**condition, "lastTransitionTime": old["lastTransitionTime"] if same and old else now})
    return out


def compute_status(observed: Observed, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The whole status object. `previous` is the current status (for lastTransitionTime); `now` RFC 3339."""
    previous = previous or {}
    conditions = _keep_transition_times(_conditions(observed), previous.get("conditions") or [], now)
    status: dict[str, Any] = {"observedGeneration": observed.generation}
    if observed.deployment is not None:
        state = rollout(observed.deployment)
        status["replicas"] = state.replicas
        status["readyReplicas"] = state.ready
    else:
        status["replicas"] = 0
        status["readyReplicas"] = 0
    status["selector"] = selector_string(observed.name)
    if observed.spec is not None:
        status["gpu"] = gpu_summary(observed.spec)
    if observed.service is not None:
        host = f"{observed.name}.{observed.namespace}.svc"
        status["endpoints"] = {"http": f"http://{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}"}
    status["conditions"] = conditions
    return status


def status_patch(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch body for .status, or None when nothing changed (then nothing is written).

    Keys that disappeared are set to null; lists (conditions) are written whole, as merge patches do.
    """
    previous = previous or {}
    if _normalise(previous) == _normalise(new):
        return None
    patch: dict[str, Any] = {key: None for key in previous if key not in new}
    patch.update(new)
    return {"status": patch}


def _normalise(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def ready_condition(status: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return _find_condition(status, READY)


def transition_event(
    previous: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> tuple[str, str, str] | None:
    """(type, reason, message) of the event to post when Ready changed its status or reason, else None."""
    old, now = ready_condition(previous), ready_condition(new)
    if (old.get("status"), old.get("reason")) == (now.get("status"), now.get("reason")):
        return None
    reason = str(now.get("reason") or READY)
    kind = "Warning" if now.get("status") != "True" and reason in WARNING_REASONS else "Normal"
    return kind, reason, str(now.get("message") or "")
