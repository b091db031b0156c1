"""Kopf wiring: watch streams feed caches and a work queue; the Controller does the rest.

Why not `@kopf.on.create/update`: those store progress and diff-base annotations on the object and
patch it after every handler, which are writes on an idle cluster. Here Kopf only *watches*:

- `@kopf.index` keeps the latest body of every ModelDeployment, child and model pod (filtered by the
  managed-by label on the server side), so a reconcile reads no API at all;
- `@kopf.on.event` only enqueues the owning ModelDeployment's key;
- a resync loop re-enqueues every key every `resync_seconds` (level-based: drift that produced no
  event, e.g. while the operator was down, is still repaired).

Neither indexes nor event handlers make Kopf add finalizers, annotations or `status.kopf`, and event
posting is off (the Controller posts its own events, only for real changes). Peering is off unless
asked for, so there are no heartbeats either.

With peering (several replicas), each replica has its own identity and priority; a PeeringMonitor
(reconcile.peering) tells the Controller whether this one is active. A standby never lists
anything: Kopf starts paused when peering is mandatory and lists only once it resumes, so the
replica that takes over starts from fresh caches. The active replica stands down only when a live
peer outranks it (one that started earlier reappears) or its own keep-alive lapses; Kopf's caches
would then freeze while the pause lasts, and resuming would not forget what was deleted meanwhile,
so the operator stops instead (`run` returns True) and its restart lists everything afresh — what
controller-runtime does when it loses its leader lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from modelplane.api.models import GROUP, KIND, MANAGED_BY_LABEL, PLURAL, SELECTOR_LABEL, VERSION
from modelplane.kube.client import Kube, use_kubeconfig
from modelplane.reconcile.controller import ChildKind, Controller, Key
from modelplane.reconcile.metrics import Metrics
from modelplane.reconcile.peering import DEFAULT_LIFETIME, PeeringMonitor, PeeringRef
from modelplane.render.children import RenderOptions

logger = logging.getLogger("modelplane.operator")

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}=modelplane"
MDEP_INDEX = "modelplane_mdeps"
POD_INDEX = "modelplane_pods"
# (group, version, plural) of each child kind -> (apiVersion, kind) and its index id.
CHILD_RESOURCES: dict[tuple[str, str, str], tuple[ChildKind, str]] = {
    ("apps", "v1", "deployments"): (("apps/v1", "Deployment"), "modelplane_deployments"),
    ("", "v1", "services"): (("v1", "Service"), "modelplane_services"),
    ("policy", "v1", "poddisruptionbudgets"): (("policy/v1", "PodDisruptionBudget"), "modelplane_pdbs"),
    ("autoscaling", "v2", "horizontalpodautoscalers"): (
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        "modelplane_hpas",
    ),
}


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    resync_seconds: float = 60.0
    default_image: str = RenderOptions().default_image
    liveness_endpoint: str | None = None
    peering: str | None = None
    # Kopf peering: this replica's identity (unique among the replicas) and priority (the highest
    # live one serves), and how long a keep-alive counts (a takeover happens within this).
    peering_identity: str = "modelplane-operator"
    peering_priority: int = 0
    peering_lifetime: int = DEFAULT_LIFETIME
    workers: int = 4

    def peering_refs(self) -> list[PeeringRef]:
        """The peering objects Kopf uses: the cluster's one, or one per served namespace."""
        if self.peering is None:
            return []
        if not self.namespaces:
            return [PeeringRef(self.peering)]
        return [PeeringRef(self.peering, namespace) for namespace in self.namespaces]


def _controller_ref(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The child's controller owner reference when a ModelDeployment is its controller."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == KIND
            and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")
        ):
            return ref
    return None


def owner_name(body: Mapping[str, Any]) -> str | None:
    """The ModelDeployment controlling this child, from its controller owner reference."""
    ref = _controller_ref(body)
    return None if ref is None else str(ref.get("name"))


def owner_uid(body: Mapping[str, Any]) -> str | None:
    ref = _controller_ref(body)
    return None if ref is None else str(ref.get("uid"))


@dataclass
class KopfCache:
    """The Controller's view of the cluster, read from Kopf's indices (filled by the watch streams)."""

    indices: Mapping[str, Any] | None = None
    child_indices: dict[ChildKind, str] = field(
        default_factory=lambda: {kind: index for kind, index in CHILD_RESOURCES.values()}
    )

    def _index(self, name: str) -> Any:
        if self.indices is None:
            return {}
        return self.indices[name]

    def modeldeployment(self, key: Key) -> Mapping[str, Any] | None:
        index = self._index(MDEP_INDEX)
        if key not in index:
            return None
        bodies = list(index[key])
        return bodies[0] if bodies else None

    def children(self, key: Key, uid: str) -> dict[ChildKind, Mapping[str, Any]]:
        found: dict[ChildKind, Mapping[str, Any]] = {}
        for kind, name in self.child_indices.items():
            index = self._index(name)
            if key not in index:
                continue
            for body in index[key]:
                if (body.get("metadata") or {}).get("name") == key[1] and owner_uid(body) == uid:
                    found[kind] = body
        return found

    def pods(self, key: Key) -> list[Mapping[str, Any]]:
        index = self._index(POD_INDEX)
        return list(index[key]) if key in index else []

    def keys(self) -> list[Key]:
        return list(self._index(MDEP_INDEX))


def make_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Our own events only (real changes); Kopf would post one per handler run.
    settings.posting.enabled = False
    # Watch streams that hang silently are the classic Kopf failure (kopf#787, #860, #1276): ask the
    # server to end each stream after 5 minutes, give up on the client side shortly after, and treat
    # 70 s without any event or bookmark as a dead stream.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 70
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # Only our children and model pods, filtered by the API server, not in memory.
    for group, version, plural in (*CHILD_RESOURCES, ("", "v1", "pods")):
        settings.watching.label_selectors[group, version, plural] = MANAGED_SELECTOR
    settings.peering.standalone = config.peering is None
    if config.peering is not None:
        settings.peering.name = config.peering
        # Mandatory: paused (nothing listed) until the peering object says this replica serves.
        settings.peering.mandatory = True
        settings.peering.stealth = True
        settings.peering.priority = config.peering_priority
        settings.peering.lifetime = config.peering_lifetime
    return settings


def make_registry(
    controller: Controller,
    cache: KopfCache,
    config: OperatorConfig,
    monitor: PeeringMonitor | None = None,
    stop: asyncio.Event | None = None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    monitor_tasks: list[asyncio.Task[None]] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same choice the kube layer makes: KUBECONFIG, else in-cluster, else ~/.kube/config.
        if use_kubeconfig():
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(**kwargs: Any) -> None:
        cache.indices = {
            name: kwargs[name] for name in (MDEP_INDEX, POD_INDEX, *cache.child_indices.values())
        }
        controller.start(config.resync_seconds)
        scope = ", ".join(config.namespaces) if config.namespaces else "all namespaces"
        logger.info(
            "Started the ModelDeployment operator for %s (resync every %ss, default image %s)",
            scope,
            config.resync_seconds,
            config.default_image,
        )
        if monitor is not None:
            logger.info(
                "Peering in %s as %s with priority %d (keep-alives live %ds): standing by until "
                "this replica is the active one",
                ", ".join(map(str, monitor.refs)),
                monitor.identity,
                monitor.priority,
                monitor.lifetime,
            )
            monitor_tasks.append(asyncio.create_task(monitor.run(), name="modelplane-peering"))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in monitor_tasks:
            task.cancel()
        await asyncio.gather(*monitor_tasks, return_exceptions=True)
        await controller.stop()
        await controller.kube.close()
        # Kopf waits on `stop` (its stop_flag) in a task of its own that it leaves running when a
        # signal stops it instead, then holds the exit for its 5 s grace period for such tasks.
        if stop is not None:
            stop.set()

    @kopf.on.probe(id="queue", registry=registry)
    def queue_probe(**_: Any) -> int:
        return len(controller.queue)

    @kopf.on.probe(id="peering", registry=registry)
    def peering_probe(**_: Any) -> str:
        if monitor is None:
            return "standalone"
        return "active" if controller.active else "standby"

    # -- ModelDeployments -------------------------------------------------------------------------

    @kopf.index(GROUP, VERSION, PLURAL, id=MDEP_INDEX, registry=registry)
    def index_mdep(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
        return {(namespace or "", name): dict(body)}

    @kopf.on.event(GROUP, VERSION, PLURAL, id="modeldeployment", registry=registry)
    def on_mdep(namespace: str | None, name: str, **_: Any) -> None:
        controller.enqueue((namespace or "", name))

    # -- children and pods ------------------------------------------------------------------------

    def child_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Key, dict[str, Any]]:
        owner = owner_name(body)
        return {} if owner is None else {(namespace or "", owner): dict(body)}

    def child_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        owner = owner_name(body)
        if owner is not None:
            controller.enqueue((namespace or "", owner))

    managed = {MANAGED_BY_LABEL: "modelplane"}
    for (group, version, plural), (_kind, index_id) in CHILD_RESOURCES.items():
        kopf.index(group, version, plural, id=index_id, labels=managed, registry=registry)(child_index)
        kopf.on.event(group, version, plural, id=f"{plural}_event", labels=managed, registry=registry)(
            child_event
        )

    def pod_key(labels: Mapping[str, str], namespace: str | None) -> Key | None:
        name = labels.get(SELECTOR_LABEL)
        return None if not name else (namespace or "", name)

    @kopf.index("", "v1", "pods", id=POD_INDEX, labels=managed, registry=registry)
    def index_pod(
        body: kopf.Body, labels: Mapping[str, str], namespace: str | None, **_: Any
    ) -> dict[Key, dict[str, Any]]:
        key = pod_key(labels, namespace)
        return {} if key is None else {key: dict(body)}

    @kopf.on.event("", "v1", "pods", id="pods_event", labels=managed, registry=registry)
    def on_pod(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        key = pod_key(labels, namespace)
        if key is not None:
            controller.enqueue(key)

    return registry


@dataclass
class StandDown:
    """What the operator does when the peering decision changes (the monitor's on_change)."""

    controller: Controller
    metrics: Metrics
    stop: asyncio.Event
    was_active: bool = False
    demoted: bool = False

    def __call__(self, active: bool, why: str) -> None:
        self.controller.set_active(active)
        self.metrics.active.set(1 if active else 0)
        if active:
            self.was_active = True
            logger.info("This replica is the active one now: reconciling")
            return
        if not self.was_active:
            logger.info("Standing by: %s", why)
        else:
            logger.warning(
                "This replica must stand down (%s): stopping, so that a restart lists everything "
                "afresh instead of serving from paused caches",
                why,
            )
            self.demoted = True
            self.stop.set()


async def run(config: OperatorConfig, kube: Kube, metrics: Metrics) -> bool:
    """Run until cancelled or signalled (Kopf handles SIGINT/SIGTERM), or until this replica, having
    been the active one, must stand down (peering): then it returns True."""
    cache = KopfCache()
    controller = Controller(
        kube=kube,
        cache=cache,
        options=RenderOptions(default_image=config.default_image),
        metrics=metrics,
        workers=config.workers,
    )
    stop = asyncio.Event()
    stand_down = StandDown(controller, metrics, stop)
    monitor: PeeringMonitor | None = None
    if config.peering is None:
        metrics.active.set(1)
    else:
        controller.set_active(False)
        metrics.active.set(0)
        monitor = PeeringMonitor(
            kube=kube,
            refs=config.peering_refs(),
            identity=config.peering_identity,
            priority=config.peering_priority,
            lifetime=config.peering_lifetime,
            on_change=stand_down,
        )
    await kopf.operator(
        registry=make_registry(controller, cache, config, monitor, stop),
        settings=make_settings(config),
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=config.peering is None,
        peering_name=config.peering,
        # Typed as Kopf's Identity, a NewType of str that Kopf does not export.
        identity=cast(Any, config.peering_identity) if config.peering is not None else None,
        priority=config.peering_priority if config.peering is not None else None,
        liveness_endpoint=config.liveness_endpoint,
        stop_flag=stop,
    )
    return stand_down.demoted
