"""Which replica reconciles, when several run with Kopf peering: the decision, and a watch that follows it.

Kopf's peering (kopf/_core/engines/peering.py) keeps one object, a ClusterKopfPeering or a KopfPeering
per served namespace, whose status maps each operator's identity to its priority, lifetime and last
keep-alive. A replica pauses while any *live* peer (last keep-alive + lifetime still ahead) has a
higher priority or the same one; paused, Kopf closes every watch stream and lists again on resuming.

Kopf only feeds our caches and work queue; the workers and the resync loop are ours, so Kopf's pause
does not stop them. This module tells the Controller the same answer from the same object:
`is_active` is Kopf's rule, plus one of our own: this replica's keep-alive must be visible and live,
so a replica that can no longer renew it (cut off from the API server) stops on its own once its
entry expires, when the others may take over.

Priorities come from the start time (`start_priority`): the replica that started first wins, so a
new or restarted replica never takes over from a healthy one, and a takeover happens only when the
active replica's keep-alive stops.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelplane.kube.client import Kube, KubeError

logger = logging.getLogger("modelplane.operator")

DEFAULT_LIFETIME = 60  # Kopf's default keep-alive lifetime, seconds
MIN_LIFETIME = 5  # Kopf renews 5-10 s before expiry (at least every second): shorter is too tight


def start_priority(now_ns: int | None = None) -> int:
    """A priority that is higher the earlier the replica started: minus the start time in microseconds.

    Microseconds keep it within 2^53 (exact in any JSON parser) and make two replicas with the same
    priority (which Kopf would both pause forever) practically impossible.
    """
    return -((time.time_ns() if now_ns is None else now_ns) // 1000)


@dataclass(frozen=True)
class Peer:
    """One entry of a peering object's status."""

    identity: str
    priority: int
    deadline: datetime.datetime  # last keep-alive + lifetime

    def live(self, now: datetime.datetime) -> bool:
        return self.deadline > now


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _time(value: Any, now: datetime.datetime) -> datetime.datetime:
    """Kopf writes `datetime.isoformat()` in UTC; anything unreadable counts as now, as Kopf's default."""
    if not isinstance(value, str):
        return now
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return now
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def peers(status: Mapping[str, Any], now: datetime.datetime) -> list[Peer]:
    """The entries of a peering object's status, with Kopf's defaults (priority 0, lifetime 60 s)."""
    found = []
    for identity, info in status.items():
        if not isinstance(info, Mapping):
            continue  # removed entries (null) and foreign data
        lifetime = _int(info.get("lifetime"), DEFAULT_LIFETIME)
        lastseen = _time(info.get("lastseen"), now)
        found.append(
            Peer(
                identity=str(identity),
                priority=_int(info.get("priority"), 0),
                deadline=lastseen + datetime.timedelta(seconds=lifetime),
            )
        )
    return found


def standby_reason(
    status: Mapping[str, Any] | None, identity: str, priority: int, now: datetime.datetime
) -> str | None:
    """Why this replica must stand by, by one peering object's status; None when it may reconcile.

    Kopf's rule: not while another live peer has a higher priority or the same one (Kopf pauses
    every replica of equal priority). Ours besides: only while our own keep-alive, with our own
    priority, is there and live. No object at all (Kopf then pauses too) is a reason as well.
    """
    if status is None:
        return "the peering object does not exist"
    own = False
    listed = False
    for peer in peers(status, now):
        listed = listed or peer.identity == identity
        if not peer.live(now):
            continue
        if peer.identity == identity:
            own = own or peer.priority == priority
        elif peer.priority > priority:
            return f"{peer.identity} has a higher priority ({peer.priority} > {priority})"
        elif peer.priority == priority:
            return f"{peer.identity} has the same priority ({priority}): Kopf pauses both"
    if not listed:
        return f"this replica's first keep-alive ({identity}, priority {priority}) is not there yet"
    if not own:
        return f"this replica's keep-alive ({identity}, priority {priority}) is not live there (lapsed)"
    return None


def is_active(status: Mapping[str, Any] | None, identity: str, priority: int, now: datetime.datetime) -> bool:
    """Whether this replica may reconcile, by one peering object's status (see `standby_reason`)."""
    return standby_reason(status, identity, priority, now) is None


def next_expiry(status: Mapping[str, Any] | None, now: datetime.datetime) -> datetime.datetime | None:
    """When the answer may change with no event: the next deadline of a live entry (None: none)."""
    deadlines = [peer.deadline for peer in peers(status or {}, now) if peer.live(now)]
    return min(deadlines) if deadlines else None


@dataclass(frozen=True)
class PeeringRef:
    """A peering object: a ClusterKopfPeering (namespace None) or a KopfPeering in a namespace."""

    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        if self.namespace is None:
            return f"ClusterKopfPeering {self.name}"
        return f"KopfPeering {self.namespace}/{self.name}"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class PeeringMonitor:
    """Watches the peering objects and calls `on_change(active, why)` on the first decision and on
    every change of it.

    Besides every event, it decides again at the next expiry of any entry (a
    killed peer's keep-alive lapses without an event). A watch silent for half a lifetime is started
    again: our own keep-alive changes the object more often than that, so silence means a stalled
    stream, and without fresh news our own entry would expire in our eyes.
    """

    kube: Kube
    refs: Sequence[PeeringRef]
    identity: str
    priority: int
    lifetime: int
    on_change: Callable[[bool, str], None]  # (active, why, when standing by)
    now: Callable[[], datetime.datetime] = utc_now
    active: bool | None = None  # None until the first decision
    _statuses: dict[PeeringRef, Mapping[str, Any] | None] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def decide(self) -> str | None:
        """Why this replica must stand by (None: it may reconcile). With several peering objects
        (one per served namespace) every one must agree, as Kopf pauses when any one says so."""
        now = self.now()
        if not self.refs:
            return "no peering object to follow"
        for ref in self.refs:
            why = standby_reason(self._statuses.get(ref), self.identity, self.priority, now)
            if why is not None:
                return f"{ref}: {why}"
        return None

    def _next_wakeup(self) -> float | None:
        now = self.now()
        expiries = [e for ref in self.refs if (e := next_expiry(self._statuses.get(ref), now))]
        if not expiries:
            return None
        return max(0.0, (min(expiries) - now).total_seconds()) + 0.05

    def update(self, ref: PeeringRef, status: Mapping[str, Any] | None) -> None:
        self._statuses[ref] = status
        self._changed.set()

    def evaluate(self) -> None:
        why = self.decide()
        active = why is None
        if active != self.active:
            self.active = active
            self.on_change(active, why or "")

    async def _follow(self, ref: PeeringRef) -> None:
        silence = max(1.0, self.lifetime / 2)
        failures = 0
        while True:
            stream = self.kube.watch_peering(ref.name, ref.namespace, server_timeout=max(1, int(silence)))
            try:
                while True:
                    async with asyncio.timeout(silence):
                        status = await anext(stream)
                    self.update(ref, status)
                    failures = 0
            except TimeoutError:
                continue  # silent for too long: look again from a fresh list
            except StopAsyncIteration:
                continue
            except KubeError as exc:
                failures += 1
                delay = min(2.0 ** (failures - 1), max(1.0, silence))
                logger.warning("Watching %s failed (again in %.0fs): %s", ref, delay, exc.message)
                await asyncio.sleep(delay)
            finally:
                await stream.aclose()

    async def run(self) -> None:
        """Follow every peering object until cancelled; decide once each has been read."""
        self._tasks = [asyncio.create_task(self._follow(ref), name=f"peering {ref}") for ref in self.refs]
        try:
            while True:
                if all(ref in self._statuses for ref in self.refs):
                    self.evaluate()
                self._changed.clear()
                wakeup = self._next_wakeup()
                try:
                    async with asyncio.timeout(wakeup):
                        await self._changed.wait()
                except TimeoutError:
                    pass
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
