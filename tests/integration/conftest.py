"""Fixtures for the integration tier: a real control plane, a namespace per test, the operator.

- ``cluster`` (session): the cluster in ``KUBECONFIG`` when set (kind, or a running devcluster),
  else a local devcluster started in a temporary folder and stopped at the end. CRDs from crds/
  are installed and Established before any test runs.
- ``namespace``: a fresh namespace per test, deleted afterwards.
- ``kubectl``: kubectl as the admin; ``cluster.operator_kubectl`` as the operator.
- ``operator`` (session): `modelplane operator` as its own process with its own identity.
  ``operator_factory``: for a test that starts, kills and restarts its own instances; the session
  operator is paused meanwhile, so exactly one operator reconciles.
- ``faults``: skips the test unless the devcluster's fault stages are there.
- ``deadline_models`` (session): models that must pass their Deployment's progress deadline (130 s
  at the least), created at the session's first integration test when any selected test uses them,
  so the wait runs alongside every other test; the tests that use them run last.

A failing test's report carries a "modelplane diagnostics" section: the ModelDeployments in its
namespace, their children, pods, events (oldest first) and the tail of the operator's log.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from modelplane.devcluster import build
from modelplane.devcluster import cluster as devcluster
from modelplane.devcluster.stages import FAULTS

from tests.integration._support import diagnostics
from tests.integration._support.cluster import (
    Cluster,
    crd_files,
    devcluster_for,
    external_kubeconfig,
    from_devcluster,
    from_external,
    install_crds,
)
from tests.integration._support.kube import Kubectl, KubectlError, wait_for
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import shared_namespace
from tests.integration._support.operator_faults import STALLS, DeadlineModels, stalling_models

_crd_error: list[str] = []


@pytest.fixture(scope="session")
def kubectl_binary() -> Path:
    return build.find_kubectl()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, kubectl_binary: Path) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    kubeconfig = external_kubeconfig()
    started_here: Path | None = None
    if kubeconfig is not None:
        if not kubeconfig.is_file():
            pytest.fail(f"KUBECONFIG={kubeconfig} does not exist", pytrace=False)
        found = devcluster_for(kubeconfig)
        result = (
            from_devcluster(found, kubectl_binary)
            if found
            else from_external(kubeconfig, kubectl_binary, work)
        )
    else:
        started_here = work / "devcluster"
        try:
            result = from_devcluster(devcluster.up(started_here), kubectl_binary)
        except devcluster.DevclusterError as error:
            devcluster.down(started_here, quiet=True)
            pytest.fail(f"the local devcluster did not start: {error}", pytrace=False)
    try:
        files = crd_files()
        if files:
            try:
                result = replace(result, crds=install_crds(result.kubectl, files))
            except KubectlError as error:
                _crd_error.append(f"installing {', '.join(map(str, files))} failed: {error}")
        yield result
    finally:
        if started_here is not None:
            devcluster.down(started_here, quiet=True)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> tuple[str, ...]:
    """The installed CRD names; skips while crds/ is empty, fails if they did not install."""
    if _crd_error:
        pytest.fail(_crd_error[0], pytrace=False)
    if not cluster.crds:
        pytest.skip("crds/ has no CustomResourceDefinitions yet (`make generate` writes them)")
    return cluster.crds


@pytest.fixture
def kubectl(cluster: Cluster) -> Kubectl:
    return cluster.kubectl


@pytest.fixture(scope="session")
def faults(cluster: Cluster) -> tuple[str, ...]:
    """The fault names a pod annotation can ask for; only the local devcluster has the stages."""
    if not cluster.faults:
        pytest.skip("fault stages exist only on the local devcluster (KWOK), not on this cluster")
    return FAULTS


DEADLINE_FIXTURE = "deadline_models"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that wait for a progress deadline run last (the order is kept otherwise), so the
    deadline clocks started at the first test have run during all the others."""
    items.sort(key=lambda item: DEADLINE_FIXTURE in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def deadline_models(
    cluster: Cluster, crds: tuple[str, ...], faults: tuple[str, ...], operator: OperatorProcess
) -> Iterator[DeadlineModels]:
    """The stalling models (operator_faults.STALLS), once the operator has created their
    Deployments: the Deployment controller's deadline clock then runs whichever operator runs."""
    kubectl = cluster.kubectl
    with shared_namespace(kubectl, "deadline") as namespace:
        kubectl.apply(stalling_models(), namespace)
        created = time.monotonic()

        def deployments() -> bool:
            found = {d["metadata"]["name"] for d in kubectl.get("deployments", namespace=namespace)}
            return found >= set(STALLS)

        wait_for(deployments, 60, f"the Deployments of the stalling models in {namespace}")
        yield DeadlineModels(namespace, created)


@pytest.fixture(scope="session", autouse=True)
def _start_deadline_clocks(request: pytest.FixtureRequest) -> None:
    """Sets up `deadline_models` at the first integration test when a selected test uses it."""
    if not any(DEADLINE_FIXTURE in getattr(item, "fixturenames", ()) for item in request.session.items):
        return
    # A skip or failure is not this test's: pytest keeps it and gives it to the tests that use them.
    with suppress(Exception, pytest.skip.Exception, pytest.fail.Exception):
        request.getfixturevalue(DEADLINE_FIXTURE)


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    kubectl = cluster.kubectl
    kubectl("create", "namespace", name)
    # Pods are admitted only once the namespace's default ServiceAccount exists, as in any cluster.
    wait_for(
        lambda: kubectl.get_or_none("serviceaccount", "default", name),
        30,
        f"the default ServiceAccount in namespace {name}",
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


class OperatorPool:
    """The session's operator and any a test runs itself; at most one reconciles at a time."""

    def __init__(self, cluster: Cluster, dir: Path) -> None:
        self.cluster = cluster
        self.dir = dir
        self.shared: OperatorProcess | None = None
        self.created: list[OperatorProcess] = []
        self.current_test: list[OperatorProcess] = []

    def session(self) -> OperatorProcess:
        if self.shared is None:
            self.shared = OperatorProcess(self.cluster, self.dir / "operator.log")
        return self.shared.start()

    @contextmanager
    def exclusive(self) -> Iterator[Callable[..., OperatorProcess]]:
        paused = self.shared is not None and self.shared.running
        if paused and self.shared is not None:
            self.shared.stop()
        self.current_test = []

        def make(**options: Any) -> OperatorProcess:
            instance = OperatorProcess(
                self.cluster, self.dir / f"operator-{len(self.created) + 1}.log", **options
            )
            self.created.append(instance)
            self.current_test.append(instance)
            return instance

        try:
            yield make
        finally:
            for instance in self.current_test:
                instance.stop()
            self.current_test = []
            if paused and self.shared is not None:
                self.shared.start()

    def logs(self) -> list[Path]:
        """The logs worth showing for the current test: its own operators', and the shared one's."""
        instances = [*self.current_test, *([self.shared] if self.shared else [])]
        return [i.log for i in instances if i.log.exists()]

    def stop_all(self) -> None:
        for instance in [*self.created, *([self.shared] if self.shared else [])]:
            instance.stop()


@pytest.fixture(scope="session")
def operator_pool(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorPool]:
    pool = OperatorPool(cluster, tmp_path_factory.mktemp("operator"))
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def operator(operator_pool: OperatorPool, crds: tuple[str, ...]) -> OperatorProcess:
    """The shared operator: all namespaces, its own identity, resync every 10 s."""
    return operator_pool.session()


@pytest.fixture
def operator_factory(
    operator_pool: OperatorPool, crds: tuple[str, ...]
) -> Iterator[Callable[..., OperatorProcess]]:
    """``make(**options)`` -> an OperatorProcess to ``start()``, ``kill()``, ``restart()``.

    Options: resync_seconds, namespaces, peering, extra_args, extra_env. The shared operator is
    paused for the test and resumed after it; the test's own instances are stopped after it.
    """
    with operator_pool.exclusive() as make:
        yield make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed or report.when not in ("setup", "call"):
        return
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    found = funcargs.get("cluster")
    if not isinstance(found, Cluster):
        return
    namespace = funcargs.get("namespace")
    deadline = funcargs.get(DEADLINE_FIXTURE)
    namespaces = [namespace] if isinstance(namespace, str) else []
    if isinstance(deadline, DeadlineModels) and deadline.namespace not in namespaces:
        namespaces.append(deadline.namespace)
    pool = funcargs.get("operator_pool")
    logs = pool.logs() if isinstance(pool, OperatorPool) else []
    text = diagnostics.collect(found.kubectl, namespaces, logs)
    if text:
        report.sections.append(("modelplane diagnostics", text))
