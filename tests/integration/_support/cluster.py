"""The cluster the integration tests run against: the local devcluster, or any cluster in KUBECONFIG."""

from __future__ import annotations

import base64
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from modelplane.devcluster import cluster as devcluster
from modelplane.devcluster import manifests
from modelplane.devcluster.nodes import NODES, FakeNode
from modelplane.devcluster.paths import CRDS_DIR, OPERATOR_RULES

from tests.integration._support.audit import AuditLog
from tests.integration._support.kube import Kubectl, wait_for

OPERATOR_NAMESPACE = "modelplane-system"
OPERATOR_SERVICE_ACCOUNT = "modelplane-operator"
# Its own ClusterRole/Binding name, so neither the chart's nor a devcluster's binding is replaced.
INTEGRATION_ROLE = "modelplane-operator-integration"


@dataclass(frozen=True)
class Cluster:
    """What the tests know about the cluster they run on."""

    admin_kubeconfig: Path
    operator_kubeconfig: Path
    operator_user: str  # the user name the API server sees for the operator's requests
    audit_log: AuditLog | None  # None on an external cluster
    faults: bool  # the devcluster's fault stages are available
    local: bool  # the devcluster (fake nodes from modelplane.devcluster.nodes)
    kubectl: Kubectl  # as the admin
    crds: tuple[str, ...] = ()  # CRDs installed from crds/
    dir: Path | None = None  # the devcluster's state folder (local only)

    @property
    def operator_kubectl(self) -> Kubectl:
        """kubectl as the operator's own identity."""
        return self.kubectl.with_kubeconfig(self.operator_kubeconfig)

    @property
    def nodes(self) -> tuple[FakeNode, ...]:
        """The fake nodes (empty on an external cluster: its nodes are whatever it has)."""
        return NODES if self.local else ()


def devcluster_for(kubeconfig: Path) -> devcluster.ClusterInfo | None:
    """The running devcluster a kubeconfig belongs to (its admin kubeconfig in a state folder), if any."""
    if kubeconfig.name != "admin.kubeconfig":
        return None
    return devcluster.find_running(kubeconfig.resolve().parent)


def from_devcluster(found: devcluster.ClusterInfo, kubectl_binary: Path) -> Cluster:
    return Cluster(
        admin_kubeconfig=found.admin_kubeconfig,
        operator_kubeconfig=found.operator_kubeconfig,
        operator_user=manifests.OPERATOR_USER,
        audit_log=AuditLog(found.audit_log),
        faults=True,
        local=True,
        kubectl=Kubectl(kubectl_binary, found.admin_kubeconfig),
        dir=found.dir,
    )


def _current_cluster(kubectl: Kubectl) -> dict[str, Any]:
    """The server and CA of the admin kubeconfig's current context."""
    config = kubectl.json("config", "view", "--raw", "--minify", "--flatten")
    return dict(config["clusters"][0]["cluster"])


def from_external(kubeconfig: Path, kubectl_binary: Path, work_dir: Path) -> Cluster:
    """Give the operator its own ServiceAccount identity, bound to the chart's rules, on any cluster.

    The token comes from the TokenRequest API (`kubectl create token`), so no Secret-based token is
    needed; it is valid for the test session.
    """
    kubectl = Kubectl(kubectl_binary, kubeconfig)
    rules = manifests.load_rules(OPERATOR_RULES)
    subject = manifests.service_account_subject(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE)
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE},
        },
        *manifests.operator_rbac(rules, subject, name=INTEGRATION_ROLE),
    ]
    kubectl.apply(objects, server_side=True)
    path = service_account_kubeconfig(
        kubectl, OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE, work_dir / "operator.kubeconfig", "24h"
    )
    return Cluster(
        admin_kubeconfig=kubeconfig,
        operator_kubeconfig=path,
        operator_user=f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}",
        audit_log=None,
        faults=False,
        local=False,
        kubectl=kubectl,
    )


def service_account_kubeconfig(
    kubectl: Kubectl, name: str, namespace: str, path: Path, duration: str = "1h"
) -> Path:
    """A kubeconfig for a ServiceAccount on the admin kubeconfig's cluster, with a token from the
    TokenRequest API (no Secret), valid for ``duration``."""
    token = kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").strip()
    server = _current_cluster(kubectl)
    cluster_entry: dict[str, Any] = {"server": server["server"]}
    for key in ("certificate-authority-data", "insecure-skip-tls-verify", "tls-server-name"):
        if key in server:
            cluster_entry[key] = server[key]
    if "certificate-authority" in server:  # a path: embed it so the kubeconfig stands alone
        cluster_entry["certificate-authority-data"] = base64.b64encode(
            Path(server["certificate-authority"]).read_bytes()
        ).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "target", "cluster": cluster_entry}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "target", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def crd_files(folder: Path = CRDS_DIR) -> list[Path]:
    return sorted(folder.glob("*.yaml"))


def install_crds(kubectl: Kubectl, files: list[Path], timeout: int = 60) -> tuple[str, ...]:
    """Apply the CRDs and wait until the API server serves them (Established)."""
    names = []
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                names.append(document["metadata"]["name"])
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for name in names:
        kubectl("wait", "--for=condition=Established", f"--timeout={timeout}s", f"crd/{name}")
        # Established can precede the storage being ready (a list then answers 429 for a moment).
        wait_for(functools.partial(_lists, kubectl, name), timeout, f"listing {name}")
    return tuple(names)


def _lists(kubectl: Kubectl, resource: str) -> bool:
    return kubectl.run("get", resource, "-A", check=False).returncode == 0


def external_kubeconfig() -> Path | None:
    value = os.environ.get("KUBECONFIG", "").strip()
    if not value:
        return None
    first = value.split(os.pathsep)[0]
    return Path(first).expanduser()
