"""How Kopf is set up: watch-only (no finalizers, annotations or status.kopf), timeouts, filters, CLI."""

from __future__ import annotations

import asyncio

import pytest
from modelplane.commands import operator as operator_command
from modelplane.kube.client import KubeError, use_kubeconfig
from modelplane.reconcile.controller import Controller
from modelplane.reconcile.operator import (
    MANAGED_SELECTOR,
    KopfCache,
    OperatorConfig,
    make_registry,
    make_settings,
    owner_name,
)


def registry(config: OperatorConfig | None = None):  # type: ignore[no-untyped-def]
    cache = KopfCache()
    controller = Controller(kube=None, cache=cache)  # type: ignore[arg-type]
    return make_registry(controller, cache, config or OperatorConfig())


def test_only_watching_and_indexing_handlers_so_kopf_never_writes() -> None:
    reg = registry()
    # Changing handlers (on.create/update/delete) store progress and diff-base annotations and may add a
    # finalizer; daemons and timers add a finalizer. None of them may exist.
    assert list(reg._changing.get_all_handlers()) == []
    assert list(reg._spawning.get_all_handlers()) == []
    assert list(reg._webhooks.get_all_handlers()) == []
    indexes = {h.id for h in reg._indexing.get_all_handlers()}
    assert {
        "modelplane_mdeps",
        "modelplane_pods",
        "modelplane_deployments",
        "modelplane_services",
        "modelplane_pdbs",
        "modelplane_hpas",
    } == indexes
    assert len(list(reg._watching.get_all_handlers())) == 6


class _ClosableKube:
    closed = False

    async def close(self) -> None:
        self.closed = True


def test_cleanup_releases_kopfs_stop_flag_so_a_signalled_operator_exits_at_once() -> None:
    """Kopf leaves its wait on the stop flag running when a signal stops it, and holds the exit
    for its 5 s grace period for such tasks; the cleanup activity ends that wait."""
    cache, kube = KopfCache(), _ClosableKube()
    controller = Controller(kube=kube, cache=cache)  # type: ignore[arg-type]

    async def cleanup() -> asyncio.Event:
        stop = asyncio.Event()
        reg = make_registry(controller, cache, OperatorConfig(), stop=stop)
        (handler,) = [h for h in reg._activities.get_all_handlers() if h.activity.value == "cleanup"]
        await handler.fn()
        return stop

    assert asyncio.run(cleanup()).is_set()
    assert kube.closed


def test_settings_timeouts_filters_and_no_event_posting() -> None:
    settings = make_settings(OperatorConfig())
    assert settings.posting.enabled is False
    assert settings.watching.server_timeout == 300
    assert settings.watching.client_timeout is not None
    assert settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.watching.connect_timeout
    assert settings.networking.request_timeout == 30
    assert settings.peering.standalone is True
    selectors = {selector.any_name: value for selector, value in settings.watching.label_selectors.items()}
    assert selectors == {
        "deployments": MANAGED_SELECTOR,
        "services": MANAGED_SELECTOR,
        "poddisruptionbudgets": MANAGED_SELECTOR,
        "horizontalpodautoscalers": MANAGED_SELECTOR,
        "pods": MANAGED_SELECTOR,
    }


def test_peering_only_when_asked() -> None:
    settings = make_settings(OperatorConfig(peering="modelplane"))
    assert settings.peering.standalone is False
    assert settings.peering.name == "modelplane"


def test_owner_name_from_the_controller_reference() -> None:
    body = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "controller": True},
                {
                    "apiVersion": "modelplane.dev/v1alpha1",
                    "kind": "ModelDeployment",
                    "name": "m",
                    "uid": "u",
                    "controller": True,
                },
            ]
        }
    }
    assert owner_name(body) == "m"
    assert owner_name({"metadata": {}}) is None


def test_cache_without_indices_is_empty() -> None:
    cache = KopfCache()
    assert cache.keys() == []
    assert cache.modeldeployment(("ns", "m")) is None
    assert cache.children(("ns", "m"), "uid") == {}
    assert cache.pods(("ns", "m")) == []


def test_cli_defaults_and_resync_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPLANE_RESYNC_SECONDS", raising=False)
    args = operator_command.parse_args([])
    assert args.namespace == []
    assert args.metrics_port == 0
    assert args.resync_seconds == 60
    assert args.peering is None
    monkeypatch.setenv("MODELPLANE_RESYNC_SECONDS", "5")
    args = operator_command.parse_args(
        [
            "-n",
            "a",
            "--namespace",
            "b",
            "--liveness",
            "http://0.0.0.0:8080/healthz",
            "--metrics-port",
            "9090",
            "--peering",
            "p",
        ]
    )
    assert args.namespace == ["a", "b"]
    assert args.resync_seconds == 5
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.metrics_port == 9090
    assert operator_command.parse_args(["--resync-seconds", "2"]).resync_seconds == 2


def test_cli_rejects_a_negative_resync() -> None:
    with pytest.raises(SystemExit):
        operator_command.parse_args(["--resync-seconds", "-1"])


def test_kube_errors_and_credentials_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KubeError(422, "invalid").permanent
    assert KubeError(400, "bad").permanent
    assert not KubeError(409, "conflict").permanent
    assert not KubeError(0, "timeout").permanent
    assert KubeError(500, "failed to create typed patch object (ns/m; apps/v1, Kind=Deployment): x").permanent
    assert not KubeError(500, "Internal error occurred: etcdserver: leader changed").permanent
    monkeypatch.setenv("KUBECONFIG", "/tmp/x")
    assert use_kubeconfig() is True
