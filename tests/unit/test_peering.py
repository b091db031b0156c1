"""Which replica reconciles under Kopf peering: the pure decision, the monitor that follows it, the gate.

The status format and the rule are Kopf's (kopf/_core/engines/peering.py): `{identity: {priority,
lifetime, lastseen}}`; pause while a live peer has a higher or the same priority.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest
from modelplane.commands import operator as operator_command
from modelplane.kube.client import KubeError
from modelplane.reconcile.controller import Controller, Key
from modelplane.reconcile.metrics import Metrics
from modelplane.reconcile.operator import OperatorConfig, StandDown, make_settings
from modelplane.reconcile.peering import (
    PeeringMonitor,
    PeeringRef,
    is_active,
    next_expiry,
    peers,
    standby_reason,
    start_priority,
)

NOW = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def entry(priority: int, seconds_ago: float = 1, lifetime: int = 60) -> dict[str, Any]:
    lastseen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen.isoformat()}


# -- the decision ---------------------------------------------------------------------------------


def test_alone_with_a_live_keepalive_is_active() -> None:
    assert is_active({"me": entry(5)}, "me", 5, NOW)


def test_a_live_peer_with_a_higher_priority_wins() -> None:
    status = {"me": entry(5), "other": entry(6)}
    assert not is_active(status, "me", 5, NOW)
    assert is_active(status, "other", 6, NOW)
    assert "other has a higher priority" in str(standby_reason(status, "me", 5, NOW))


def test_equal_priorities_pause_both_as_kopf_does() -> None:
    status = {"a": entry(5), "b": entry(5)}
    assert not is_active(status, "a", 5, NOW)
    assert not is_active(status, "b", 5, NOW)
    assert "same priority" in str(standby_reason(status, "a", 5, NOW))


def test_a_dead_peer_does_not_count() -> None:
    status = {"me": entry(5), "gone": entry(9, seconds_ago=61, lifetime=60)}
    assert is_active(status, "me", 5, NOW)
    # Exactly at its deadline it is dead, as in Kopf (deadline <= now).
    assert is_active({"me": entry(5), "gone": entry(9, seconds_ago=60)}, "me", 5, NOW)
    assert not is_active({"me": entry(5), "gone": entry(9, seconds_ago=59)}, "me", 5, NOW)


def test_lower_priorities_do_not_block() -> None:
    assert is_active({"me": entry(5), "a": entry(4), "b": entry(-3)}, "me", 5, NOW)


def test_without_its_own_live_keepalive_a_replica_stands_by() -> None:
    # Not there yet (Kopf's first keep-alive is on its way), expired (cut off from the API server),
    # or left by an earlier process of the same identity with another priority.
    assert not is_active({}, "me", 5, NOW)
    assert not is_active({"me": entry(5, seconds_ago=61)}, "me", 5, NOW)
    assert not is_active({"me": entry(4)}, "me", 5, NOW)
    assert "first keep-alive" in str(standby_reason({}, "me", 5, NOW))
    assert "(lapsed)" in str(standby_reason({"me": entry(5, seconds_ago=61)}, "me", 5, NOW))


def test_no_peering_object_is_standby() -> None:
    assert not is_active(None, "me", 5, NOW)
    assert standby_reason(None, "me", 5, NOW) == "the peering object does not exist"


def test_kopfs_defaults_and_removed_entries() -> None:
    # Kopf removes an entry by patching it to null; priority defaults to 0, lifetime to 60 s and a
    # missing lastseen to now.
    status: dict[str, Any] = {"me": entry(0), "removed": None, "bare": {}}
    (bare,) = [p for p in peers(status, NOW) if p.identity == "bare"]
    assert bare.priority == 0
    assert bare.deadline == NOW + datetime.timedelta(seconds=60)
    assert not is_active(status, "me", 0, NOW)  # "bare" is live with the same priority
    assert is_active({**status, "me": entry(1)}, "me", 1, NOW)


def test_unreadable_values_fall_back_to_kopfs_defaults() -> None:
    status = {"me": entry(1), "odd": {"priority": "high", "lifetime": "x", "lastseen": "yesterday"}}
    (odd,) = [p for p in peers(status, NOW) if p.identity == "odd"]
    assert odd.priority == 0
    assert odd.deadline == NOW + datetime.timedelta(seconds=60)
    assert is_active({**status, "me": entry(1)}, "me", 1, NOW)


def test_next_expiry_is_the_earliest_live_deadline() -> None:
    status = {"me": entry(5, seconds_ago=10), "other": entry(6, seconds_ago=50), "dead": entry(7, 100)}
    assert next_expiry(status, NOW) == NOW + datetime.timedelta(seconds=10)
    assert next_expiry({}, NOW) is None
    assert next_expiry(None, NOW) is None


def test_earlier_start_means_higher_priority() -> None:
    earlier, later = start_priority(1_000_000_000_000), start_priority(1_000_000_001_000)
    assert earlier > later
    assert abs(start_priority()) < 2**53  # exact in any JSON parser


# -- the monitor ----------------------------------------------------------------------------------


class FakePeeringApi:
    """`watch_peering` fed by the test: put a status (or None) on a peering object's queue."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str | None], asyncio.Queue[Any]] = {}
        self.watches = 0

    def queue(self, name: str, namespace: str | None = None) -> asyncio.Queue[Any]:
        return self.queues.setdefault((name, namespace), asyncio.Queue())

    async def watch_peering(
        self, name: str, namespace: str | None, *, server_timeout: int = 60
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        self.watches += 1
        queue = self.queue(name, namespace)
        while True:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            yield item


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now


class Changes(list[tuple[bool, str]]):
    """What the monitor reported, with an event set on each report."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def __call__(self, active: bool, why: str) -> None:
        self.append((active, why))
        self.event.set()


def monitor(api: FakePeeringApi, refs: list[PeeringRef], clock: Clock, changes: Changes) -> PeeringMonitor:
    return PeeringMonitor(
        kube=api,  # type: ignore[arg-type]
        refs=refs,
        identity="me",
        priority=5,
        lifetime=60,
        on_change=changes,
        now=clock,
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.anyio
async def test_monitor_follows_the_object_and_reports_changes_once() -> None:
    api, clock, changes = FakePeeringApi(), Clock(), Changes()
    ref = PeeringRef("modelplane")
    task = asyncio.create_task(monitor(api, [ref], clock, changes).run())
    try:
        await settle()
        assert changes == []  # nothing read yet: no decision (and the Controller stays held)
        api.queue("modelplane").put_nowait(None)  # the list found no object
        await settle()
        assert changes == [(False, "ClusterKopfPeering modelplane: the peering object does not exist")]
        api.queue("modelplane").put_nowait({"me": entry(5), "other": entry(9)})
        await settle()
        assert len(changes) == 1  # still standing by: not reported again
        api.queue("modelplane").put_nowait({"me": entry(5)})
        await settle()
        assert changes[-1] == (True, "")
        api.queue("modelplane").put_nowait({"me": entry(5, seconds_ago=0)})
        await settle()
        assert len(changes) == 2
        api.queue("modelplane").put_nowait({"me": entry(5), "newcomer": entry(6)})
        await settle()
        assert changes[-1][0] is False
        assert "newcomer has a higher priority" in changes[-1][1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.anyio
async def test_monitor_takes_over_when_a_killed_peers_keepalive_lapses_without_any_event() -> None:
    """A peer killed with SIGKILL never says goodbye: its entry just stops being renewed."""
    api, clock, changes = FakePeeringApi(), Clock(), Changes()
    ref = PeeringRef("modelplane")
    mon = monitor(api, [ref], clock, changes)
    # Its keep-alive lapses in a fraction of a second (real time): the monitor must wake up then.
    clock.now = NOW
    lastseen = NOW - datetime.timedelta(seconds=60) + datetime.timedelta(seconds=0.2)
    api.queue("modelplane").put_nowait(
        {
            "me": entry(5, seconds_ago=0, lifetime=3600),
            "killed": {"priority": 9, "lifetime": 60, "lastseen": lastseen.isoformat()},
        }
    )
    task = asyncio.create_task(mon.run())
    try:
        await settle()
        assert changes == [(False, "ClusterKopfPeering modelplane: killed has a higher priority (9 > 5)")]
        wakeup = mon._next_wakeup()
        assert wakeup is not None
        assert 0.2 <= wakeup < 1
        clock.now = NOW + datetime.timedelta(seconds=1)  # time passes; no event arrives
        await asyncio.wait_for(_until(lambda: len(changes) == 2, changes.event), timeout=5)
        assert changes[-1] == (True, "")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(predicate: Callable[[], bool], changed: asyncio.Event) -> None:
    """Wait until `predicate()` holds, looking again whenever `changed` is set."""
    while not predicate():
        changed.clear()
        await changed.wait()


@pytest.mark.anyio
async def test_monitor_needs_every_namespaces_peering_object() -> None:
    api, clock, changes = FakePeeringApi(), Clock(), Changes()
    refs = [PeeringRef("mp", "a"), PeeringRef("mp", "b")]
    task = asyncio.create_task(monitor(api, refs, clock, changes).run())
    try:
        api.queue("mp", "a").put_nowait({"me": entry(5)})
        await settle()
        assert changes == []  # b not read yet
        api.queue("mp", "b").put_nowait(None)
        await settle()
        assert changes == [(False, "KopfPeering b/mp: the peering object does not exist")]
        api.queue("mp", "b").put_nowait({"me": entry(5)})
        await settle()
        assert changes[-1] == (True, "")
        api.queue("mp", "b").put_nowait({"me": entry(5), "x": entry(7)})
        await settle()
        assert changes[-1] == (False, "KopfPeering b/mp: x has a higher priority (7 > 5)")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.anyio
async def test_a_failing_watch_is_started_again() -> None:
    api, clock, changes = FakePeeringApi(), Clock(), Changes()
    task = asyncio.create_task(monitor(api, [PeeringRef("mp")], clock, changes).run())
    try:
        api.queue("mp").put_nowait(KubeError(503, "unavailable"))
        await settle()
        api.queue("mp").put_nowait({"me": entry(5)})
        await asyncio.wait_for(_until(lambda: bool(changes) and changes[-1][0], changes.event), timeout=5)
        assert api.watches == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- the gate and the stand-down ------------------------------------------------------------------


class EmptyCache:
    """Keys whose ModelDeployment is gone; records which keys a reconcile looked up."""

    def __init__(self, keys: list[Key]) -> None:
        self._keys = keys
        self.reads: list[Key] = []
        self.read = asyncio.Event()

    def modeldeployment(self, key: Key) -> None:
        self.reads.append(key)
        self.read.set()
        return None

    def children(self, key: Key, uid: str) -> dict[Any, Any]:
        return {}

    def pods(self, key: Key) -> list[Any]:
        return []

    def keys(self) -> list[Key]:
        return list(self._keys)


@pytest.mark.anyio
async def test_a_standby_controller_reconciles_nothing_until_active() -> None:
    cache = EmptyCache([("ns", "a"), ("ns", "b")])
    controller = Controller(kube=None, cache=cache, workers=2)  # type: ignore[arg-type]
    controller.set_active(False)
    controller.start(resync_seconds=0.01)
    try:
        controller.enqueue(("ns", "a"))
        await asyncio.sleep(0.1)  # several resync periods
        assert cache.reads == []
        assert controller.metrics.registry.get_sample_value("modelplane_resyncs_total") == 0
        controller.set_active(True)
        await asyncio.wait_for(
            _until(lambda: {("ns", "a"), ("ns", "b")} <= set(cache.reads), cache.read), timeout=5
        )
        assert controller.metrics.registry.get_sample_value("modelplane_resyncs_total") > 0
    finally:
        await controller.stop()


@pytest.mark.anyio
async def test_standing_down_after_serving_stops_the_operator() -> None:
    controller = Controller(kube=None, cache=EmptyCache([]))  # type: ignore[arg-type]
    metrics, stop = Metrics(), asyncio.Event()
    stand_down = StandDown(controller, metrics, stop)
    stand_down(False, "the peering object does not exist")  # the first decision: standing by
    assert not stop.is_set()
    assert not controller.active
    stand_down(True, "")
    assert controller.active
    assert metrics.registry.get_sample_value("modelplane_operator_active") == 1
    stand_down(False, "other has a higher priority (9 > 5)")
    assert stop.is_set()
    assert stand_down.demoted
    assert not controller.active
    assert metrics.registry.get_sample_value("modelplane_operator_active") == 0


def test_peering_settings_carry_priority_and_lifetime() -> None:
    config = OperatorConfig(peering="mp", peering_identity="pod-a", peering_priority=-7, peering_lifetime=9)
    settings = make_settings(config)
    assert settings.peering.standalone is False
    assert settings.peering.mandatory is True
    assert settings.peering.priority == -7
    assert settings.peering.lifetime == 9
    assert config.peering_refs() == [PeeringRef("mp")]
    namespaced = OperatorConfig(namespaces=("a", "b"), peering="mp")
    assert namespaced.peering_refs() == [PeeringRef("mp", "a"), PeeringRef("mp", "b")]
    assert OperatorConfig().peering_refs() == []


def test_cli_peering_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    args = operator_command.parse_args(["--peering", "mp"])
    assert args.peering_identity is None
    assert args.peering_priority is None
    assert args.peering_lifetime == 60
    monkeypatch.setenv("POD_NAME", "modelplane-abc")
    args = operator_command.parse_args(
        ["--peering", "mp", "--peering-priority", "3", "--peering-lifetime", "10"]
    )
    assert args.peering_identity == "modelplane-abc"
    assert (args.peering_priority, args.peering_lifetime) == (3, 10)
    assert "/" in operator_command.default_identity()


@pytest.mark.parametrize(
    "argv",
    [
        ["--peering", "mp", "--peering-lifetime", "4"],
        ["--peering", "mp", "--peering-priority", "high"],
        ["--peering", "mp", "-n", "team-*"],
    ],
)
def test_cli_rejects_bad_peering_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        operator_command.parse_args(argv)
    assert "--peering" in capsys.readouterr().err


def test_a_replica_that_stood_down_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    async def stood_down(*_: Any) -> bool:
        return True

    monkeypatch.setattr(operator_command, "run", stood_down)
    monkeypatch.setattr(operator_command, "connect", lambda **_: None)
    assert operator_command.main(["--peering", "mp"]) == operator_command.EXIT_STOOD_DOWN
