"""The Helm chart on a real control plane: install, the operator as the chart's identity, upgrade, uninstall.

KWOK runs no containers, so the chart's operator pod only looks Ready; the operator itself then runs
here as a local process authenticated as the chart's ServiceAccount (a token from the TokenRequest
API), which proves the chart's RBAC is enough for it (and the audit log shows no request refused).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration._support.cluster import Cluster, service_account_kubeconfig
from tests.integration._support.kube import Kubectl, KubectlError, condition, deployment_available, wait_for
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import mdep, metric_total, scrape, wait_ready
from tests.tools import generate, monitoring
from tests.tools.binaries import helm_binary
from tests.tools.chart import HelmCli

# The first test may build helm from source (minutes on a cold cache) inside its fixture.
pytestmark = pytest.mark.timeout(1800)

CRD = "modeldeployments.modelplane.dev"
HELM_TEST_SCRIPT = generate.CHART_DIR / "files" / "helm-test.py"
# Where the audit log names the token a ServiceAccount request carried (its JWT id).
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


@pytest.fixture(scope="module")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> HelmCli:
    return HelmCli(helm_binary(), cluster.admin_kubeconfig, tmp_path_factory.mktemp("helm-home"))


@dataclass
class Release:
    """One release of the chart in its own namespace, uninstalled after the test."""

    helm: HelmCli
    kubectl: Kubectl
    name: str
    namespace: str

    @property
    def fullname(self) -> str:
        return f"{self.name}-modelplane"

    @property
    def user(self) -> str:
        """The user name the API server sees for the chart's ServiceAccount."""
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    def install(self, values: dict[str, Any] | None = None, *extra: str) -> str:
        adopt_crds(self.kubectl, self.name, self.namespace)
        args = ["install", self.name, str(generate.CHART_DIR), "-n", self.namespace]
        return self.helm(*args, "--wait", "--timeout=180s", *extra, values=values).stdout

    def upgrade(self, values: dict[str, Any] | None = None, *extra: str) -> str:
        args = ["upgrade", self.name, str(generate.CHART_DIR), "-n", self.namespace]
        return self.helm(*args, "--wait", "--timeout=180s", *extra, values=values).stdout

    def uninstall(self) -> str:
        return self.helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout=120s").stdout

    def deployment(self) -> dict[str, Any]:
        found: dict[str, Any] = self.kubectl.get("deployment", self.fullname, self.namespace)
        return found


def adopt_crds(kubectl: Kubectl, release: str, namespace: str) -> None:
    """Hand the kept CRDs to this release, as a user moving to Helm (or reinstalling) would.

    The test session applied the ModelDeployment CRD with kubectl, and earlier releases left theirs
    behind (helm.sh/resource-policy: keep); Helm refuses to take over an object whose ownership
    marks name another release, and these three marks are how one tells it to.
    """
    for crd in (CRD, "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        if kubectl.get_or_none("crd", crd) is None:
            continue
        kubectl("label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        kubectl(
            "annotate", "crd", crd, f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}", "--overwrite",
        )  # fmt: skip


@pytest.fixture
def release(cluster: Cluster, helm: HelmCli, namespace: str, crds: tuple[str, ...]) -> Iterator[Release]:
    found = Release(helm, cluster.kubectl, f"mp{secrets.token_hex(3)}", namespace)
    yield found
    helm("uninstall", found.name, "-n", namespace, "--wait", "--timeout=120s", check=False)
    # The peering object is a hook (Helm does not delete hooks on uninstall); its CRD may be absent.
    cluster.kubectl.run(
        "delete", "clusterkopfpeerings.kopf.dev", found.fullname, "--ignore-not-found", check=False
    )


@pytest.fixture
def watched(release: Release, kubectl: Kubectl) -> Iterator[str]:
    """A second namespace, for an operator that watches only it (`operator.watchNamespaces`)."""
    name = f"{release.namespace}-w"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def refused_requests(cluster: Cluster, user: str, since: int) -> list[str]:
    """Requests RBAC refused to a user since a mark in the audit log.

    Only the authorizer's "forbid" counts: a 403 from admission (an event posted into a namespace
    being deleted) is not a missing permission.
    """
    if cluster.audit_log is None:
        return []
    return [
        f"{e.get('verb')} {e.get('requestURI')}: {e.get('annotations', {}).get('authorization.k8s.io/reason', '')}"
        for e in cluster.audit_log.by_user(user, since)
        if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
    ]


def run_as_service_account(
    release: Release,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
    token: str = "operator",
    **options: Any,
) -> OperatorProcess:
    """An operator process authenticated as the chart's ServiceAccount, with its own token (so the
    audit log tells the processes apart by the token's credential id)."""
    kubeconfig = service_account_kubeconfig(
        release.kubectl,
        release.fullname,
        release.namespace,
        tmp_path / f"{release.fullname}-{token}.kubeconfig",
    )
    extra_env = {"KUBECONFIG": str(kubeconfig), **options.pop("extra_env", {})}
    return operator_factory(extra_env=extra_env, resync_seconds=5, **options)


# -- install -----------------------------------------------------------------------------------


def test_install_establishes_the_crd_and_makes_the_operator_available(
    release: Release, kubectl: Kubectl
) -> None:
    notes = release.install()
    assert "helm test" in notes

    crd = kubectl.get("crd", CRD)
    established = condition(crd, "Established")
    assert established is not None
    assert established["status"] == "True"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name

    deployment = release.deployment()
    assert deployment_available(deployment)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pods = kubectl.get(
        "pods", namespace=release.namespace, selector=f"app.kubernetes.io/instance={release.name}"
    )
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == release.fullname
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The Pod Security admission's restricted profile admits the operator pod unchanged.
    kubectl(
        "label",
        "namespace",
        release.namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    )
    kubectl("delete", "pod", pod["metadata"]["name"], "-n", release.namespace, "--wait=true")
    wait_for(
        lambda: deployment_available(release.deployment()),
        120,
        "the operator pod to come back under restricted",
    )


def test_the_operator_works_as_the_charts_service_account(
    release: Release,
    kubectl: Kubectl,
    cluster: Cluster,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    release.install()
    user = release.user
    mark = cluster.audit_log.mark() if cluster.audit_log else 0
    operator = run_as_service_account(release, operator_factory, tmp_path).start()

    kubectl.apply(mdep("served"), namespace=release.namespace)
    ready = wait_ready(kubectl, release.namespace, "served", timeout=120)
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    assert kubectl.get("deployment", "served", release.namespace)
    assert kubectl.get("service", "served", release.namespace)

    if cluster.audit_log is not None:
        requests = cluster.audit_log.by_user(user, mark)
        assert requests, "the operator's requests should carry the chart's ServiceAccount identity"
    assert refused_requests(cluster, user, mark) == []
    assert "Not enough permissions" not in operator.log_tail(400)

    # The helm test hook's check, run here against the live cluster as the same ServiceAccount.
    kubeconfig = yaml.safe_load(Path(operator.extra_env["KUBECONFIG"]).read_text())
    token = tmp_path / "token"
    token.write_text(kubeconfig["users"][0]["user"]["token"])
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]))
    env = {
        **os.environ,
        "MODELPLANE_TEST_API_SERVER": kubeconfig["clusters"][0]["cluster"]["server"],
        "MODELPLANE_TEST_TOKEN_FILE": str(token),
        "MODELPLANE_TEST_CA_FILE": str(ca),
        "MODELPLANE_TEST_HEALTH_URL": operator.liveness_url,
    }

    def helm_test() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(HELM_TEST_SCRIPT)], env=env, capture_output=True, text=True, timeout=60
        )

    check = helm_test()
    assert check.returncode == 0, check.stderr
    assert "is Established" in check.stdout
    operator.stop()
    failed = helm_test()
    assert failed.returncode == 1, "the helm test must fail when the operator is down"
    assert operator.liveness_url in failed.stderr


def test_namespaced_mode_serves_only_the_listed_namespace(
    release: Release,
    kubectl: Kubectl,
    cluster: Cluster,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
    watched: str,
) -> None:
    release.install({"operator": {"watchNamespaces": [watched]}})
    user = release.user
    for verb, resource, namespace, allowed in (
        ("patch", "deployments", watched, "yes"),
        ("list", "deployments", release.namespace, "no"),
        ("list", "modeldeployments", "default", "no"),
        ("get", "secrets", watched, "no"),
    ):
        answer = kubectl.run("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False)
        assert answer.stdout.strip() == allowed, (verb, resource, namespace)

    mark = cluster.audit_log.mark() if cluster.audit_log else 0
    run_as_service_account(release, operator_factory, tmp_path, namespaces=[watched]).start()
    kubectl.apply(mdep("served"), namespace=watched)
    wait_ready(kubectl, watched, "served", timeout=120)
    assert refused_requests(cluster, user, mark) == []


# -- upgrade and uninstall ---------------------------------------------------------------------


def test_upgrade_with_changed_values_changes_the_operator_deployment(
    release: Release, kubectl: Kubectl
) -> None:
    release.install()
    before = release.deployment()
    release.upgrade(
        {"operator": {"resyncSeconds": 30}, "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}}},
        "--reuse-values",
    )
    after = release.deployment()
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["spec"]["selector"] == before["spec"]["selector"]
    container = after["spec"]["template"]["spec"]["containers"][0]
    assert "--resync-seconds=30" in container["args"]
    assert container["resources"]["requests"] == {"cpu": "200m", "memory": "300Mi"}
    wait_for(
        lambda: (
            deployment_available(release.deployment())
            and release.deployment()["status"].get("updatedReplicas") == 1
        ),
        120,
        "the upgraded operator to be available",
    )
    history = release.helm("history", release.name, "-n", release.namespace, "-o", "yaml").stdout
    assert [entry["revision"] for entry in yaml.safe_load(history)] == [1, 2]


def test_uninstall_keeps_the_crd_and_the_models_which_stay_deletable(
    release: Release,
    kubectl: Kubectl,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    release.install()
    operator = run_as_service_account(release, operator_factory, tmp_path).start()
    kubectl.apply(mdep("kept"), namespace=release.namespace)
    wait_ready(kubectl, release.namespace, "kept", timeout=120)
    operator.stop()

    release.uninstall()
    assert kubectl.get_or_none("deployment", release.fullname, release.namespace) is None
    assert kubectl.get_or_none("clusterrole", release.fullname) is None
    crd = kubectl.get_or_none("crd", CRD)
    assert crd is not None, "helm.sh/resource-policy: keep must keep the CRD"
    kept = kubectl.get("modeldeployment", "kept", release.namespace)
    assert not kept["metadata"].get("finalizers"), "nothing may block deleting a ModelDeployment"

    kubectl("delete", "modeldeployment", "kept", "-n", release.namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: kubectl.get_or_none("deployment", "kept", release.namespace) is None,
        60,
        "the model's Deployment to be garbage-collected with it",
    )


# -- RBAC on the live cluster ------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [{}, {"replicaCount": 2}, {"operator": {"watchNamespaces": ["default"]}}],
    ids=["all-namespaces", "peering", "namespaced"],
)
def test_live_rbac_has_no_wildcard_and_no_secret(
    release: Release, kubectl: Kubectl, values: dict[str, Any]
) -> None:
    release.install(values)
    selector = f"app.kubernetes.io/instance={release.name}"
    roles = kubectl.get("clusterroles", selector=selector) + kubectl.get(
        "roles", selector=selector, all_namespaces="true"
    )
    assert roles
    for role in roles:
        for rule in role["rules"]:
            text = f"{role['kind']}/{role['metadata']['name']}: {rule}"
            assert "*" not in str(rule), text
            assert "secrets" not in rule.get("resources", []), text
    user = release.user
    for verb in ("get", "list", "watch"):
        answer = kubectl.run("auth", "can-i", verb, "secrets", "-A", f"--as={user}", check=False)
        assert answer.stdout.strip() == "no", verb


# -- monitors ---------------------------------------------------------------------------------


def test_monitors_install_where_the_prometheus_operator_crds_are(release: Release, kubectl: Kubectl) -> None:
    """The API server accepts the ServiceMonitor and PodMonitor under the upstream CRDs' schemas."""
    for path in monitoring.crd_files().values():
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for plural in monitoring.PLURALS.values():
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.monitoring.coreos.com")
    release.install({"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}})
    service_monitor = kubectl.get("servicemonitor", release.fullname, release.namespace)
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    pod_monitor = kubectl.get("podmonitor", f"{release.fullname}-models", release.namespace)
    assert pod_monitor["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "modelplane"}}


# -- peering -----------------------------------------------------------------------------------

# A short keep-alive lifetime (the chart's minimum is 5 s) so that a takeover takes seconds: each
# replica then renews its keep-alive every second.
PEERING_LIFETIME = 6


def token_id(process: OperatorProcess) -> str:
    """The credential id the audit log records for a process's ServiceAccount token (its JWT jti)."""
    kubeconfig = yaml.safe_load(Path(process.extra_env["KUBECONFIG"]).read_text())
    payload = kubeconfig["users"][0]["user"]["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


def requests_of(cluster: Cluster, process: OperatorProcess, since: int) -> list[dict[str, Any]]:
    """Every request one operator process made since a mark, told apart by its token."""
    assert cluster.audit_log is not None
    credential = token_id(process)
    return [
        event
        for event in cluster.audit_log.events(since)
        if credential in (event.get("user", {}).get("extra", {}).get(CREDENTIAL_ID) or [])
        and event.get("stage") in ("ResponseComplete", "ResponseStarted")
    ]


def work_of(events: list[dict[str, Any]]) -> list[str]:
    """Requests other than the peering keep-alives and the discovery every operator does: what
    only a serving replica may do (list/watch what it reconciles, write anything else)."""
    out = []
    for event in events:
        ref = event.get("objectRef") or {}
        resource = ref.get("resource")
        if resource in (
            None,
            "clusterkopfpeerings",
            "kopfpeerings",
            "customresourcedefinitions",
            "namespaces",
        ):
            continue
        out.append(f"{event.get('verb')} {resource} {ref.get('namespace', '')}/{ref.get('name', '')}")
    return out


def active(process: OperatorProcess) -> bool:
    return metric_total(scrape(process.metrics_url), "modelplane_operator_active") == 1


def peer(
    release: Release,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
    identity: str,
    *extra: str,
    namespaces: tuple[str, ...] = (),
) -> OperatorProcess:
    args = ["--peering-identity", identity, "--peering-lifetime", str(PEERING_LIFETIME), *extra]
    return run_as_service_account(
        release,
        operator_factory,
        tmp_path,
        token=identity,
        peering=release.fullname,
        extra_args=args,
        namespaces=namespaces,
    )


def test_two_replicas_peer_so_exactly_one_operator_serves(
    release: Release,
    kubectl: Kubectl,
    cluster: Cluster,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    """Two operator processes under the chart's peering: the first serves, the second writes and
    reads nothing but its keep-alives until the first is killed, then takes over within the
    peering lifetime from a fresh listing; a replica that is outranked stands down and exits."""
    release.install({"replicaCount": 2, "operator": {"peeringLifetimeSeconds": PEERING_LIFETIME}})
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        established = condition(kubectl.get("crd", name), "Established")
        assert established is not None
        assert established["status"] == "True"
    assert kubectl.get("clusterkopfpeerings.kopf.dev", release.fullname)
    args = release.deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--peering={release.fullname}" in args
    assert f"--peering-lifetime={PEERING_LIFETIME}" in args
    mark = cluster.audit_log.mark() if cluster.audit_log else 0

    first = peer(release, operator_factory, tmp_path, "first").start()
    wait_for(lambda: active(first), 30, "the first replica to be the active one")
    second = peer(release, operator_factory, tmp_path, "second").start()

    def registered() -> dict[str, Any] | None:
        status: dict[str, Any] = (
            kubectl.get("clusterkopfpeerings.kopf.dev", release.fullname).get("status") or {}
        )
        return status if {"first", "second"} <= set(status) else None

    peers = wait_for(registered, 30, "both replicas to keep alive in the peering object")
    assert peers["first"]["priority"] > peers["second"]["priority"], "the first started ranks higher"
    wait_for(lambda: "Standing by: " in second.log_tail(), 30, "the second replica to stand by")
    assert "first has a higher priority" in second.log_tail()

    kubectl.apply(mdep("peered"), namespace=release.namespace)
    wait_ready(kubectl, release.namespace, "peered", timeout=120)
    assert active(first)
    assert not active(second)
    served, standby = scrape(first.metrics_url), scrape(second.metrics_url)
    assert metric_total(served, "modelplane_api_writes_total") > 0
    assert metric_total(standby, "modelplane_api_writes_total") == 0
    assert metric_total(standby, "modelplane_reconciles_total") == 0
    if cluster.audit_log is not None:
        # Paused from the start, the standby's Kopf has not even listed what it would reconcile.
        assert work_of(requests_of(cluster, second, mark)) == []
        assert work_of(requests_of(cluster, first, mark))
    standing_by = cluster.audit_log.mark() if cluster.audit_log else 0

    first.kill()  # SIGKILL: its keep-alive just stops, nothing says goodbye
    wait_for(lambda: active(second), PEERING_LIFETIME + 10, "the standby to take over within the lifetime")
    assert "This replica is the active one now" in second.log_tail()
    kubectl.apply(mdep("after-takeover"), namespace=release.namespace)
    wait_ready(kubectl, release.namespace, "after-takeover", timeout=120)
    assert metric_total(scrape(second.metrics_url), "modelplane_api_writes_total") > 0
    if cluster.audit_log is not None:
        # It started from a fresh listing, after the takeover.
        verbs = {(e["verb"], e["objectRef"]["resource"]) for e in requests_of(cluster, second, standing_by)}
        assert ("list", "modeldeployments") in verbs
        assert ("list", "pods") in verbs
    # The model served before the takeover is still Ready, and nothing was created twice.
    assert condition(kubectl.get("modeldeployment", "peered", release.namespace), "Ready")["status"] == "True"  # type: ignore[index]
    assert (
        len(
            kubectl.get(
                "deployments", namespace=release.namespace, selector="app.kubernetes.io/managed-by=modelplane"
            )
        )
        == 2
    )

    # A replica with a higher priority (say, an operator someone debugs against the cluster) outranks
    # the serving one, which stands down and exits rather than keep serving from paused caches.
    third = peer(release, operator_factory, tmp_path, "third", "--peering-priority", "100").start()
    wait_for(lambda: not second.running, 30, "the outranked replica to exit")
    assert "This replica must stand down (ClusterKopfPeering" in second.log_tail()
    assert "third has a higher priority" in second.log_tail()
    wait_for(lambda: active(third), 30, "the outranking replica to serve")
    kubectl.apply(mdep("third-model"), namespace=release.namespace)
    wait_ready(kubectl, release.namespace, "third-model", timeout=120)


def test_peering_in_namespaced_mode_uses_each_namespaces_peering_object(
    release: Release,
    kubectl: Kubectl,
    cluster: Cluster,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
    watched: str,
) -> None:
    release.install({"replicaCount": 2, "operator": {"watchNamespaces": [watched]}})
    assert kubectl.get("kopfpeerings.kopf.dev", release.fullname, watched)
    mark = cluster.audit_log.mark() if cluster.audit_log else 0
    operator = peer(release, operator_factory, tmp_path, "only", namespaces=(watched,)).start()
    wait_for(lambda: active(operator), 30, "the replica to be the active one")
    kubectl.apply(mdep("served"), namespace=watched)
    wait_ready(kubectl, watched, "served", timeout=120)
    status = kubectl.get("kopfpeerings.kopf.dev", release.fullname, watched)["status"]
    assert "only" in status
    user = release.user
    assert refused_requests(cluster, user, mark) == []


# -- the plain manifest ------------------------------------------------------------------------


def test_plain_manifest_is_accepted_by_the_api_server(kubectl: Kubectl, crds: tuple[str, ...]) -> None:
    """Every object of charts/install.yaml passes the API server's validation and admission (dry run)."""
    docs = [d for d in yaml.safe_load_all(generate.INSTALL_MANIFEST.read_text()) if d]
    # A dry run creates nothing, so the namespaced objects need their namespace to exist for real.
    created = kubectl.get_or_none("namespace", generate.INSTALL_NAMESPACE) is None
    if created:
        kubectl("create", "namespace", generate.INSTALL_NAMESPACE)
    try:
        out = kubectl("apply", "--dry-run=server", "-f", str(generate.INSTALL_MANIFEST))
    except KubectlError as error:
        pytest.fail(f"kubectl apply --dry-run=server -f charts/install.yaml: {error}")
    finally:
        if created:
            kubectl("delete", "namespace", generate.INSTALL_NAMESPACE, "--wait=false")
    assert out.count("(server dry run)") == len(docs), out
