"""One level-based reconcile: load the spec, render the children, apply what differs, write status once.

Reads come from caches fed by Kopf's watch streams; writes go through `modelplane.kube`. Nothing here
branches on which event happened: every reconcile starts from the current state, so a missed event,
a restart mid-reconcile or a periodic resync all converge the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from modelplane.api.errors import describe
from modelplane.api.models import ModelDeploymentSpec
from modelplane.kube.client import FIELD_MANAGER, Kube, KubeError, utc_now
from modelplane.reconcile.metrics import Metrics
from modelplane.reconcile.queue import WorkQueue
from modelplane.render.children import CHILD_KINDS, Owner, RenderOptions, build_children, replicas_handover
from modelplane.render.compare import HASH_ANNOTATION, differences, needs_apply, owns_field
from modelplane.render.status import (
    READY,
    ApplyError,
    Observed,
    compute_status,
    ready_condition,
    status_patch,
    transition_event,
)

logger = logging.getLogger("modelplane.operator")

Key = tuple[str, str]  # (namespace, name)
ChildKind = tuple[str, str]  # (apiVersion, kind)
DEPLOYMENT: ChildKind = ("apps/v1", "Deployment")
SERVICE: ChildKind = ("v1", "Service")
HANDOVER_MANAGER = f"{FIELD_MANAGER}-handover"
# Children that come and go with the spec (a PDB only above one replica, an HPA only when asked).
OPTIONAL_KINDS = {("policy/v1", "PodDisruptionBudget"), ("autoscaling/v2", "HorizontalPodAutoscaler")}


class Cache(Protocol):
    """What the watch streams have told us (Kopf indices in the operator, dicts in tests)."""

    def modeldeployment(self, key: Key) -> Mapping[str, Any] | None: ...

    def children(self, key: Key, uid: str) -> dict[ChildKind, Mapping[str, Any]]: ...

    def pods(self, key: Key) -> list[Mapping[str, Any]]: ...

    def keys(self) -> list[Key]: ...


class RetryLater(Exception):
    """The reconcile wrote what it could but must run again soon (a transient API error)."""


def parse_spec(spec: Any) -> tuple[ModelDeploymentSpec | None, str | None]:
    """The validated spec, or None and an error naming the field (what CEL could not check)."""
    try:
        return ModelDeploymentSpec.model_validate(spec or {}), None
    except ValidationError as exc:
        return None, describe(exc, "spec.").replace("\n", "; ")


@dataclass(frozen=True)
class _Written:
    """Our latest status write, and the resourceVersions that are older than it.

    `behind` holds the version the write was computed from and those of our own earlier writes: the
    watch may deliver an earlier write of ours after we made a later one, and that status is stale
    too. Versions are opaque, so "older" can only be what we saw ourselves.
    """

    status: Mapping[str, Any]
    version: str
    behind: frozenset[str]


# How long our own child writes outrank a cache that does not show them yet. Watch events arrive in
# milliseconds; the bound only matters if the watch missed a change made meanwhile (say, a deletion
# of the child we had just created): that is repaired at the first reconcile after it.
OWN_WRITES_SECONDS = 30.0


@dataclass(frozen=True)
class _Applied:
    """A child as our latest apply (or delete: None) left it, and the versions older than that.

    `behind` holds the versions the cache may still show from before our writes (None: absent). The
    ReplicaSet controller's "expectations" solve the same problem: a reconcile that runs before the
    watch delivers our own create would apply it again and post a second "Created" event.
    """

    result: Mapping[str, Any] | None
    behind: frozenset[str | None]
    at: float


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _event(value: bool) -> asyncio.Event:
    event = asyncio.Event()
    if value:
        event.set()
    return event


@dataclass
class Controller:
    kube: Kube
    cache: Cache
    options: RenderOptions = field(default_factory=RenderOptions)
    metrics: Metrics = field(default_factory=Metrics)
    now: Callable[[], str] = utc_now
    workers: int = 4
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    _failures: dict[Key, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _ready: dict[Key, bool] = field(default_factory=dict)
    # Manifests the API server refused as invalid, by desired hash: not sent again until they change,
    # so an invalid spec does not turn into a write on every resync.
    _rejected: dict[tuple[Key, ChildKind], tuple[str, str]] = field(default_factory=dict)
    # The status last written, by key. Until the watch delivers our own write, the cache still holds
    # an older status: a reconcile in that gap (a pod event, say) would write the same status again
    # and post its event twice.
    _written: dict[Key, _Written] = field(default_factory=dict)
    _applied: dict[Key, dict[ChildKind, _Applied]] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    # Set while this replica may reconcile: always without peering; with peering, only while it is
    # the active replica (reconcile.peering). Cleared, the workers take no key and the resync stops.
    _active: asyncio.Event = field(default_factory=lambda: _event(True))

    # -- the reconcile ------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        namespace, name = key
        resource = self.cache.modeldeployment(key)
        if resource is None:
            self._ready.pop(key, None)
            self._written.pop(key, None)
            for stale in [k for k in self._rejected if k[0] == key]:
                del self._rejected[stale]
            self._applied.pop(key, None)
            return  # deleted: garbage collection removes the children
        metadata = resource.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            return
        uid = str(metadata.get("uid"))
        observed = self._with_own_writes(key, self.cache.children(key, uid))
        spec, spec_error = parse_spec(resource.get("spec"))

        current: dict[ChildKind, Mapping[str, Any]] = dict(observed)
        apply_error: ApplyError | None = None
        changes: list[tuple[str, str]] = []  # (reason, message) for events
        if spec is not None:
            owner = Owner(name=name, namespace=namespace, uid=uid)
            desired = build_children(spec, owner, self.options)
            for manifest in desired:
                kind: ChildKind = (manifest["apiVersion"], manifest["kind"])
                before = observed.get(kind)
                why = needs_apply(manifest, before)
                if not why:
                    continue
                digest = manifest["metadata"]["annotations"][HASH_ANNOTATION]
                rejected = self._rejected.get((key, kind))
                if rejected is not None and rejected[0] == digest:
                    apply_error = apply_error or ApplyError(kind[1], name, rejected[1], True)
                    continue
                try:
                    if kind == DEPLOYMENT and spec.autoscaling is not None and before is not None:
                        await self._hand_over_replicas(spec, owner, before)
                    result = await self.kube.apply(manifest)
                    self._remember(key, kind, before, result)
                except KubeError as exc:
                    logger.warning("Applying %s %s/%s failed: %s", kind[1], namespace, name, exc.message)
                    if exc.permanent:
                        self._rejected[(key, kind)] = (digest, exc.message)
                    apply_error = apply_error or ApplyError(kind[1], name, exc.message, exc.permanent)
                    continue
                self._rejected.pop((key, kind), None)
                current[kind] = result
                verb = "Created" if before is None else "Updated"
                logger.info("%s %s %s/%s (%s)", verb, kind[1], namespace, name, ", ".join(why[:5]))
                changes.append((verb, f"{verb} {kind[1]} {name}" + ("" if before is None else f": {why[0]}")))
                leftover = differences(manifest, result)
                if leftover:
                    # The server rewrote a value the comparison does not understand: it would be applied
                    # again on every resync. Say so loudly; it is a bug in modelplane.render.compare.
                    logger.warning(
                        "Applied %s %s/%s still differs at %s", kind[1], namespace, name, leftover[:5]
                    )
            wanted = {(m["apiVersion"], m["kind"]) for m in desired}
            for kind in sorted(OPTIONAL_KINDS - wanted):
                if kind not in observed:
                    continue
                try:
                    await self.kube.delete(kind[0], kind[1], namespace, name)
                    self._remember(key, kind, observed[kind], None)
                except KubeError as exc:
                    logger.warning("Deleting %s %s/%s failed: %s", kind[1], namespace, name, exc.message)
                    apply_error = apply_error or ApplyError(kind[1], name, exc.message, exc.permanent)
                    continue
                current.pop(kind, None)
                logger.info("Deleted %s %s/%s: no longer wanted", kind[1], namespace, name)
                changes.append(("Deleted", f"Deleted {kind[1]} {name}: no longer wanted by the spec"))

        state = Observed(
            name=name,
            namespace=namespace,
            generation=int(metadata.get("generation") or 0),
            spec=spec,
            spec_error=spec_error,
            deployment=current.get(DEPLOYMENT),
            service=current.get(SERVICE),
            pods=self.cache.pods(key),
            apply_error=apply_error,
        )
        version = str(metadata.get("resourceVersion") or "")
        previous = self._previous_status(key, version, resource.get("status") or {})
        status = compute_status(state, previous, self.now())
        patch = status_patch(previous, status)
        if patch is not None:
            written = await self._write_status(key, patch)
            if version and written:
                last = self._written.get(key)
                behind = {version} | ({last.version, *last.behind} if last else set())
                self._written[key] = _Written(status, written, frozenset(behind))
        self._ready[key] = ready_condition(status).get("status") == "True"

        transition = transition_event(previous, status) if patch is not None else None
        for reason, message in changes:
            await self._event(resource, "Normal", reason, message)
        if transition is not None:
            await self._event(resource, *transition)
        if apply_error is not None and not apply_error.permanent:
            raise RetryLater(f"{apply_error.kind} {apply_error.name}: {apply_error.message}")

    def _with_own_writes(
        self, key: Key, cached: Mapping[ChildKind, Mapping[str, Any]]
    ) -> dict[ChildKind, Mapping[str, Any]]:
        """The children as the API server has them: our own latest writes where the cache lags."""
        children = dict(cached)
        own = self._applied.get(key, {})
        now = self.clock()
        for kind, applied in list(own.items()):
            if _version(cached.get(kind)) not in applied.behind or now - applied.at > OWN_WRITES_SECONDS:
                del own[kind]  # the cache has our write, or a newer one: trust it
            elif applied.result is None:
                children.pop(kind, None)
            else:
                children[kind] = applied.result
        if not own:
            self._applied.pop(key, None)
        return children

    def _remember(
        self, key: Key, kind: ChildKind, before: Mapping[str, Any] | None, result: Mapping[str, Any] | None
    ) -> None:
        own = self._applied.setdefault(key, {})
        last = own.get(kind)
        behind = {_version(before)} | (set(last.behind) if last else set())
        own[kind] = _Applied(result, frozenset(behind), self.clock())

    def _previous_status(self, key: Key, version: str, cached: Mapping[str, Any]) -> Mapping[str, Any]:
        """The status as the API server has it: our last write while the cache has not caught up."""
        written = self._written.get(key)
        if written is None:
            return cached
        if version in written.behind:
            return written.status
        # The cache has our latest write, or a write of someone else's: trust it again.
        del self._written[key]
        return cached

    async def _hand_over_replicas(
        self, spec: ModelDeploymentSpec, owner: Owner, deployment: Mapping[str, Any]
    ) -> None:
        """Before the first apply without replicas, keep the field alive (see replicas_handover)."""
        if not owns_field(deployment, FIELD_MANAGER, ("spec", "replicas")):
            return
        current = int((deployment.get("spec") or {}).get("replicas", 1))
        await self.kube.apply(replicas_handover(spec, owner, current), field_manager=HANDOVER_MANAGER)
        logger.info(
            "Handed replicas of Deployment %s/%s over to the HorizontalPodAutoscaler",
            owner.namespace,
            owner.name,
        )

    async def _write_status(self, key: Key, patch: dict[str, Any]) -> str:
        """Write the status; the resourceVersion it made ("" when the resource is gone)."""
        namespace, name = key
        try:
            result = await self.kube.patch_status(namespace, name, patch)
        except KubeError as exc:
            if exc.code == 404:
                return ""  # deleted meanwhile
            raise
        ready = ready_condition(patch["status"])
        logger.info(
            "Updated status of ModelDeployment %s/%s: %s=%s %s",
            namespace,
            name,
            READY,
            ready.get("status"),
            ready.get("reason"),
        )
        return str((result.get("metadata") or {}).get("resourceVersion") or "")

    async def _event(self, resource: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            await self.kube.event(dict(resource), type_, reason, message)
        except KubeError as exc:  # an event is worth a log line, not a failed reconcile
            logger.warning("Posting event %s failed: %s", reason, exc.message)

    # -- the workers ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._active.is_set()

    def set_active(self, active: bool) -> None:
        """Let the workers and the resync run (the active replica) or hold them (a standby).

        Keys queued meanwhile stay queued. A reconcile already running when this replica stands
        down finishes; the operator then stops (reconcile.operator), as its caches stop following.
        """
        if active:
            self._active.set()
        else:
            self._active.clear()

    def enqueue(self, key: Key) -> None:
        self.queue.add(key)
        self.metrics.queue_depth.set(len(self.queue))

    def enqueue_all(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self.enqueue(key)

    async def _worker(self) -> None:
        while True:
            await self._active.wait()
            key = await self.queue.get()
            if not self.active:  # stood down while waiting for a key: leave it queued
                self.queue.done(key)
                self.queue.add(key)
                continue
            self.metrics.queue_depth.set(len(self.queue))
            started = time.monotonic()
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # One broken reconcile must not stop the others: log, count, retry with backoff.
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(2.0**failures, 300.0)
                self.metrics.reconciles.labels(result="error").inc()
                self.metrics.errors.inc()
                detail = (
                    exc.message
                    if isinstance(exc, KubeError)
                    else str(exc)
                    if isinstance(exc, RetryLater)
                    else repr(exc)
                )
                logger.error(
                    "Reconciling ModelDeployment %s/%s failed (retry in %.0fs): %s",
                    key[0],
                    key[1],
                    delay,
                    detail,
                    exc_info=not isinstance(exc, KubeError | RetryLater),
                )
                self.queue.done(key)
                self.queue.add_after(key, delay)
            else:
                self._failures.pop(key, None)
                self.metrics.reconciles.labels(result="ok").inc()
                self.queue.done(key)
            finally:
                self.metrics.duration.observe(time.monotonic() - started)
                self.metrics.managed.set(len(self.cache.keys()))
                self.metrics.ready.set(sum(1 for ready in self._ready.values() if ready))

    async def _resync(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if not self.active:
                continue
            self.enqueue_all(self.cache.keys())
            self.metrics.resyncs.inc()

    def start(self, resync_seconds: float) -> None:
        """Start the workers and the periodic resync (call once, inside the running event loop)."""
        for index in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"modelplane-worker-{index}"))
        if resync_seconds > 0:
            self._tasks.append(asyncio.create_task(self._resync(resync_seconds), name="modelplane-resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.queue.close()


__all__ = ["CHILD_KINDS", "Cache", "Controller", "Key", "parse_spec"]
