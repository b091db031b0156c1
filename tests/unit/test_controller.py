"""The reconcile loop against an in-memory API server: what it writes, and that idle means no writes."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from modelplane.kube.client import KubeError
from modelplane.reconcile.controller import Controller, Key, RetryLater
from modelplane.reconcile.queue import WorkQueue

KEY: Key = ("ns", "m")
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeServer:
    """Stores what is applied, adds what an API server adds, and records every write."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.mdep: dict[str, Any] | None = {
            "apiVersion": "modelplane.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ns", "uid": "uid-1", "generation": 1},
            "spec": spec,
        }
        self.writes: list[tuple[str, str]] = []
        self.fail: dict[str, KubeError] = {}
        self.handed_over: int | None = None
        self.revision = 100  # the source of children's resourceVersions

    def touch(self, kind: tuple[str, str]) -> None:
        """A change to a child, by anyone: the API server gives it a new resourceVersion."""
        self.revision += 1
        self.objects[kind]["metadata"]["resourceVersion"] = str(self.revision)

    # -- the Kube interface the Controller uses --
    async def apply(self, manifest: dict[str, Any], *, field_manager: str = "modelplane") -> dict[str, Any]:
        self.writes.append(("apply", manifest["kind"] if field_manager == "modelplane" else field_manager))
        if field_manager != "modelplane":  # the handover: only replicas, merged into what is there
            self.objects[("apps/v1", "Deployment")]["spec"]["replicas"] = manifest["spec"]["replicas"]
            self.touch(("apps/v1", "Deployment"))
            self.handed_over = manifest["spec"]["replicas"]
            return copy.deepcopy(self.objects[("apps/v1", "Deployment")])
        if manifest["kind"] in self.fail:
            raise self.fail[manifest["kind"]]
        kind = (manifest["apiVersion"], manifest["kind"])
        observed = copy.deepcopy(manifest)
        previous = self.objects.get(kind)
        generation = (previous or {}).get("metadata", {}).get("generation", 0) + 1
        observed["metadata"].update({"uid": f"{manifest['kind']}-uid", "generation": generation})
        owned = {"f:spec": {"f:replicas": {}}} if "replicas" in manifest.get("spec", {}) else {"f:spec": {}}
        observed["metadata"]["managedFields"] = [
            {"manager": "modelplane", "operation": "Apply", "fieldsV1": owned}
        ]
        if (
            manifest["kind"] == "Deployment"
            and "replicas" not in manifest["spec"]
            and self.handed_over is None
        ):
            observed["spec"].pop("replicas", None)  # nobody else owned it: the API server drops it
        if manifest["kind"] == "Deployment":
            observed["spec"].setdefault("replicas", (previous or {}).get("spec", {}).get("replicas", 1))
            observed["spec"]["strategy"] = {"type": "RollingUpdate"}
            for container in observed["spec"]["template"]["spec"]["containers"]:
                container["terminationMessagePath"] = "/dev/termination-log"
            observed["status"] = (previous or {}).get("status", {})
        self.objects[kind] = observed
        self.touch(kind)
        return copy.deepcopy(observed)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.writes.append(("delete", kind))
        self.objects.pop((api_version, kind), None)

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("patch", "status"))
        assert self.mdep is not None
        status = dict(self.mdep.get("status") or {})
        for key, value in patch["status"].items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        self.mdep["status"] = status
        return copy.deepcopy(self.mdep)

    async def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.writes.append(("event", reason))

    async def close(self) -> None:
        pass

    # -- the Cache interface: an up-to-date watch cache of the same objects --
    def modeldeployment(self, key: Key) -> Mapping[str, Any] | None:
        return copy.deepcopy(self.mdep) if key == KEY else None

    def children(self, key: Key, uid: str) -> dict[tuple[str, str], Mapping[str, Any]]:
        return {k: copy.deepcopy(v) for k, v in self.objects.items()} if key == KEY else {}

    def pods(self, key: Key) -> list[Mapping[str, Any]]:
        return []

    def keys(self) -> list[Key]:
        return [KEY] if self.mdep else []

    # -- helpers for the tests --
    def roll_out(self) -> None:
        """What the Deployment controller and the kubelet do: everything becomes available."""
        deployment = self.objects[("apps/v1", "Deployment")]
        replicas = deployment["spec"]["replicas"]
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "updatedReplicas": replicas,
        }
        self.touch(("apps/v1", "Deployment"))

    def set_spec(self, spec: dict[str, Any]) -> None:
        assert self.mdep is not None
        self.mdep["spec"] = spec
        self.mdep["metadata"]["generation"] += 1

    def take_writes(self) -> list[tuple[str, str]]:
        writes, self.writes = self.writes, []
        return writes


def controller(server: FakeServer, clock: Callable[[], float] = time.monotonic) -> Controller:
    return Controller(kube=server, cache=server, now=lambda: "2026-01-01T00:00:00Z", clock=clock)  # type: ignore[arg-type]


def ready(server: FakeServer) -> dict[str, Any]:
    assert server.mdep is not None
    return next(c for c in server.mdep["status"]["conditions"] if c["type"] == "Ready")


SPEC = {"model": {"uri": "s3://b/m"}, "replicas": 2, "gpu": {"count": 1}}


async def test_first_reconcile_creates_children_and_status_then_idle_writes_nothing() -> None:
    server = FakeServer(copy.deepcopy(SPEC))
    ctl = controller(server)
    await ctl.reconcile(KEY)
    writes = server.take_writes()
    assert ("apply", "Deployment") in writes
    assert ("apply", "Service") in writes
    assert ("apply", "PodDisruptionBudget") in writes
    assert ("patch", "status") in writes
    assert ("event", "Created") in writes
    assert ready(server)["status"] == "False"

    await ctl.reconcile(KEY)  # nothing changed
    assert server.take_writes() == []

    server.roll_out()
    await ctl.reconcile(KEY)
    assert server.take_writes() == [("patch", "status"), ("event", "Available")]
    assert ready(server)["status"] == "True"
    for _ in range(3):  # resyncs
        await ctl.reconcile(KEY)
    assert server.take_writes() == []


async def test_drift_is_repaired_with_one_apply() -> None:
    server = FakeServer(copy.deepcopy(SPEC))
    ctl = controller(server)
    await ctl.reconcile(KEY)
    server.roll_out()
    await ctl.reconcile(KEY)
    server.take_writes()

    server.objects[("apps/v1", "Deployment")]["spec"]["replicas"] = 7
    server.touch(("apps/v1", "Deployment"))
    del server.objects[("v1", "Service")]
    await ctl.reconcile(KEY)
    writes = server.take_writes()
    assert writes.count(("apply", "Deployment")) == 1
    assert writes.count(("apply", "Service")) == 1
    assert server.objects[("apps/v1", "Deployment")]["spec"]["replicas"] == 2
    await ctl.reconcile(KEY)
    server.roll_out()
    await ctl.reconcile(KEY)
    server.take_writes()
    await ctl.reconcile(KEY)
    assert server.take_writes() == []


async def test_unwanted_pdb_is_deleted_and_autoscaling_drops_replicas() -> None:
    server = FakeServer(copy.deepcopy(SPEC))
    ctl = controller(server)
    await ctl.reconcile(KEY)
    assert ("policy/v1", "PodDisruptionBudget") in server.objects
    server.set_spec({"model": {"uri": "s3://b/m"}, "replicas": 1})
    await ctl.reconcile(KEY)
    assert ("delete", "PodDisruptionBudget") in server.take_writes()
    assert ("policy/v1", "PodDisruptionBudget") not in server.objects

    server.set_spec({"model": {"uri": "s3://b/m"}, "autoscaling": {"maxReplicas": 3}})
    await ctl.reconcile(KEY)
    assert ("autoscaling/v2", "HorizontalPodAutoscaler") in server.objects
    server.set_spec({"model": {"uri": "s3://b/m"}})
    await ctl.reconcile(KEY)
    assert ("delete", "HorizontalPodAutoscaler") in server.take_writes()


async def test_invalid_spec_touches_no_child() -> None:
    server = FakeServer(copy.deepcopy(SPEC))
    ctl = controller(server)
    await ctl.reconcile(KEY)
    before = copy.deepcopy(server.objects)
    server.take_writes()
    server.set_spec({"model": {"uri": "s3://b/m"}, "gpu": {"mig": "1g.10gb", "count": 3}})  # CEL bypassed
    await ctl.reconcile(KEY)
    assert server.take_writes() == [("patch", "status"), ("event", "InvalidSpec")]
    assert server.objects == before  # nothing already running is lost
    assert ready(server)["reason"] == "InvalidSpec"
    assert "spec.gpu" in ready(server)["message"]
    await ctl.reconcile(KEY)
    assert server.take_writes() == []


async def test_a_rejected_manifest_is_not_resent_until_it_changes() -> None:
    server = FakeServer(copy.deepcopy(SPEC))
    server.fail["Deployment"] = KubeError(422, 'Deployment.apps "m" is invalid: spec.template: bad')
    ctl = controller(server)
    await ctl.reconcile(KEY)
    assert ready(server)["reason"] == "InvalidSpec"
    assert "spec.template: bad" in ready(server)["message"]
    server.take_writes()
    await ctl.reconcile(KEY)
    assert server.take_writes() == []
    del server.fail["Deployment"]
    server.set_spec({**SPEC, "replicas": 3})
    await ctl.reconcile(KEY)
    assert ("apply", "Deployment") in server.take_writes()


async def test_transient_errors_are_retried() -> None:
    server = FakeServer(copy.deepcopy(SPEC))
    server.fail["Service"] = KubeError(503, "etcdserver: request timed out")
    ctl = controller(server)
    with pytest.raises(RetryLater):
        await ctl.reconcile(KEY)
    assert ready(server)["reason"] == "ApplyFailed"
    assert ("apps/v1", "Deployment") in server.objects  # the rest was applied


async def test_deleted_resource_is_left_to_garbage_collection() -> None:
    server = FakeServer(copy.deepcopy(SPEC))
    server.mdep = None
    await controller(server).reconcile(KEY)
    assert server.take_writes() == []


async def test_one_failing_key_does_not_stop_the_workers() -> None:
    server = FakeServer(copy.deepcopy(SPEC))
    ctl = controller(server)
    seen: list[Key] = []
    done = asyncio.Event()

    async def reconcile(key: Key) -> None:
        seen.append(key)
        if key == ("ns", "broken"):
            raise RuntimeError("boom")
        if ("ns", "fine") in seen:
            done.set()

    ctl.reconcile = reconcile  # type: ignore[method-assign]
    ctl.start(resync_seconds=0)
    ctl.enqueue(("ns", "broken"))
    ctl.enqueue(("ns", "fine"))
    await asyncio.wait_for(done.wait(), timeout=5)
    await ctl.stop()
    assert ("ns", "fine") in seen
    assert ctl.metrics.errors._value.get() == 1


async def test_queue_serialises_and_collapses_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1
    key = await queue.get()
    queue.add("a")  # while active: remembered, not queued twice
    assert len(queue) == 0
    queue.done(key)
    assert len(queue) == 1


async def test_switching_to_autoscaling_hands_replicas_over_without_a_dip() -> None:
    server = FakeServer({"model": {"uri": "s3://b/m"}, "replicas": 4})
    ctl = controller(server)
    await ctl.reconcile(KEY)
    server.take_writes()
    server.set_spec({"model": {"uri": "s3://b/m"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}})
    await ctl.reconcile(KEY)
    writes = server.take_writes()
    assert writes.index(("apply", "modelplane-handover")) < writes.index(("apply", "Deployment"))
    assert server.objects[("apps/v1", "Deployment")]["spec"]["replicas"] == 4  # kept, not reset to 1
    server.set_spec({"model": {"uri": "s3://b/m"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 8}})
    await ctl.reconcile(KEY)
    assert ("apply", "modelplane-handover") not in server.take_writes()  # only once


class LaggingCache(FakeServer):
    """A watch cache that shows the ModelDeployment as of the last `deliver()`, with resourceVersions."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.version = 1
        assert self.mdep is not None
        self.mdep["metadata"]["resourceVersion"] = "1"
        self.seen = copy.deepcopy(self.mdep)
        self.history = [copy.deepcopy(self.mdep)]  # the object after each write, oldest first

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        await super().patch_status(namespace, name, patch)
        assert self.mdep is not None
        self.version += 1
        self.mdep["metadata"]["resourceVersion"] = str(self.version)
        self.history.append(copy.deepcopy(self.mdep))
        return copy.deepcopy(self.mdep)

    def modeldeployment(self, key: Key) -> Mapping[str, Any] | None:
        return copy.deepcopy(self.seen) if key == KEY else None

    def deliver(self, write: int | None = None) -> None:
        """The watch event of the object as it is now arrives, or that of an earlier status write."""
        self.seen = copy.deepcopy(self.mdep if write is None else self.history[write])


async def test_a_reconcile_before_the_watch_shows_our_status_writes_nothing_again() -> None:
    server = LaggingCache(copy.deepcopy(SPEC))
    ctl = controller(server)
    await ctl.reconcile(KEY)
    assert ("patch", "status") in server.take_writes()
    await ctl.reconcile(KEY)  # e.g. a pod event, while the cache still has no status
    assert server.take_writes() == []
    server.deliver()
    await ctl.reconcile(KEY)
    assert server.take_writes() == []

    server.roll_out()
    await ctl.reconcile(KEY)
    assert server.take_writes() == [("patch", "status"), ("event", "Available")]
    await ctl.reconcile(KEY)  # the stale cache still says Ready=False: no second Available event
    assert server.take_writes() == []
    assert ready(server)["status"] == "True"


async def test_a_watch_event_of_our_earlier_write_is_still_stale() -> None:
    """Two writes before the watch delivers the first: that first status must not be taken as
    the server's, or the second would be written, and its event posted, again."""
    server = LaggingCache(copy.deepcopy(SPEC))
    ctl = controller(server)
    await ctl.reconcile(KEY)  # creates the children; Ready=False, from an empty status
    assert ("patch", "status") in server.take_writes()
    server.roll_out()
    await ctl.reconcile(KEY)  # Ready=True, while the cache still shows no status at all
    assert server.take_writes() == [("patch", "status"), ("event", "Available")]
    server.deliver(1)  # the first write (Ready=False) arrives late
    await ctl.reconcile(KEY)
    assert server.take_writes() == []
    server.deliver()
    await ctl.reconcile(KEY)
    assert server.take_writes() == []
    assert ready(server)["status"] == "True"


async def test_a_status_changed_by_someone_else_is_trusted_again() -> None:
    server = LaggingCache(copy.deepcopy(SPEC))
    ctl = controller(server)
    await ctl.reconcile(KEY)
    server.deliver()
    assert server.mdep is not None
    server.mdep["status"] = {}  # wiped by hand (a new resourceVersion)
    server.version += 1
    server.mdep["metadata"]["resourceVersion"] = str(server.version)
    server.deliver()
    server.take_writes()
    await ctl.reconcile(KEY)
    assert ("patch", "status") in server.take_writes()
    assert ready(server)["status"] == "False"


class LaggingChildren(FakeServer):
    """A watch cache whose children are as of the last `deliver_children()`."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.seen_children: dict[tuple[str, str], dict[str, Any]] = {}

    def children(self, key: Key, uid: str) -> dict[tuple[str, str], Mapping[str, Any]]:
        return copy.deepcopy(self.seen_children) if key == KEY else {}

    def deliver_children(self) -> None:
        self.seen_children = copy.deepcopy(self.objects)


async def test_a_reconcile_before_the_watch_shows_our_children_applies_nothing_again() -> None:
    server = LaggingChildren(copy.deepcopy(SPEC))
    clock = [0.0]
    ctl = controller(server, clock=lambda: clock[0])
    await ctl.reconcile(KEY)
    assert server.take_writes().count(("event", "Created")) == 3
    await ctl.reconcile(KEY)  # e.g. our own status write's watch event, before the Deployment's
    assert server.take_writes() == []
    server.deliver_children()
    await ctl.reconcile(KEY)
    assert server.take_writes() == []

    # Someone deletes the Service: the cache shows it gone, and it is created again.
    del server.objects[("v1", "Service")]
    server.deliver_children()
    await ctl.reconcile(KEY)
    assert server.take_writes() == [("apply", "Service"), ("event", "Created")]

    # Fewer replicas: the PDB is deleted once, though the cache still shows it for a while.
    server.deliver_children()
    server.set_spec({"model": {"uri": "s3://b/m"}, "replicas": 1, "gpu": {"count": 1}})
    await ctl.reconcile(KEY)
    assert ("delete", "PodDisruptionBudget") in server.take_writes()
    await ctl.reconcile(KEY)
    assert ("delete", "PodDisruptionBudget") not in server.take_writes()


async def test_own_writes_outrank_the_cache_only_for_a_while() -> None:
    """Had the watch missed a change (the child we created deleted at once), it is repaired later."""
    server = LaggingChildren(copy.deepcopy(SPEC))
    clock = [0.0]
    ctl = controller(server, clock=lambda: clock[0])
    await ctl.reconcile(KEY)
    server.take_writes()
    server.objects.clear()  # gone before the cache ever showed them
    clock[0] += 10
    await ctl.reconcile(KEY)
    assert server.take_writes() == []
    clock[0] += 60
    await ctl.reconcile(KEY)
    assert server.take_writes().count(("event", "Created")) == 3
