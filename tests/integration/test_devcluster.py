"""The control plane itself: fake GPU nodes, real scheduling, controllers, faults, identity, audit.

These hold on any cluster the fixtures accept where it makes sense (scheduling, garbage collection,
RBAC); the node set, the faults and the audit log are the local devcluster's and skip elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelplane.devcluster import cluster as devcluster
from modelplane.devcluster import manifests, nodes
from modelplane.devcluster.procs import is_ours
from modelplane.devcluster.stages import (
    EXIT_CODE_ANNOTATION,
    FAULT_ANNOTATION,
    FAULT_CONTAINER_ANNOTATION,
    MISSING_SECRET_ANNOTATION,
)

from tests.integration._support.audit import summary
from tests.integration._support.cluster import Cluster
from tests.integration._support.kube import Kubectl, condition, deployment_available, wait_for

GPU_TOLERATION = {"key": nodes.GPU_TAINT_KEY, "operator": "Exists", "effect": nodes.GPU_TAINT_EFFECT}
H100_NODES = {n.name for n in nodes.NODES if n.labels.get(nodes.PRODUCT_LABEL) == nodes.H100}
GPU_NODES = {n.name for n in nodes.NODES if n.taints}


def deployment(
    name: str,
    *,
    replicas: int = 1,
    gpus: int = 0,
    tolerate_gpu: bool = False,
    annotations: dict[str, str] | None = None,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "server", "image": "registry.example/modelplane/test:1"}
    if gpus:
        container["resources"] = {"limits": {nodes.GPU_RESOURCE: str(gpus)}}
    if env:
        container["env"] = env
    pod_spec: dict[str, Any] = {"containers": [container]}
    if tolerate_gpu:
        pod_spec["tolerations"] = [GPU_TOLERATION]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": pod_spec,
            },
        },
    }


def pods_of(kubectl: Kubectl, namespace: str, app: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kubectl.get("pods", namespace=namespace, selector=f"app={app}")
    return pods


def require_local(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("checks the local devcluster's own node set, faults or audit log")


def test_fake_nodes_look_like_gpu_feature_discovery_labelled_nodes(
    cluster: Cluster, kubectl: Kubectl
) -> None:
    require_local(cluster)
    live = {node["metadata"]["name"]: node for node in kubectl.get("nodes")}
    assert set(live) == {n.name for n in nodes.NODES}
    for fake in nodes.NODES:
        node = live[fake.name]
        assert node["metadata"]["annotations"][nodes.KWOK_ANNOTATION] == "fake"
        labels = node["metadata"]["labels"]
        assert {k: labels.get(k) for k in fake.labels} == dict(fake.labels)
        for field in ("capacity", "allocatable"):
            assert {k: node["status"][field].get(k) for k in fake.resources} == dict(fake.resources), field
        assert node["status"]["allocatable"]["pods"] == "110"
        taints = [(t["key"], t.get("value"), t["effect"]) for t in node["spec"].get("taints", [])]
        gpu_taint = (nodes.GPU_TAINT_KEY, nodes.GPU_TAINT_VALUE, nodes.GPU_TAINT_EFFECT)
        assert (gpu_taint in taints) == bool(fake.taints), taints
        assert condition(node, "Ready") == {**condition(node, "Ready"), "status": "True"}  # type: ignore[dict-item]

    h100 = [n for n in nodes.NODES if n.labels.get(nodes.PRODUCT_LABEL) == nodes.H100]
    assert len(h100) == 2
    assert all(n.gpus == 8 and n.labels["nvidia.com/gpu.memory"] == "81559" for n in h100)
    (mig,) = [n for n in nodes.NODES if n.labels.get("nvidia.com/mig.strategy") == "mixed"]
    assert mig.labels[nodes.PRODUCT_LABEL] == nodes.A100
    assert mig.allocatable(nodes.MIG_1G_10GB) == 7
    assert mig.gpus == 0
    assert len([n for n in nodes.NODES if not n.taints]) == 1


def test_gpu_deployment_becomes_available_on_h100_nodes(
    cluster: Cluster, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(deployment("two-gpus", replicas=2, gpus=2, tolerate_gpu=True), namespace)
    wait_for(
        lambda: deployment_available(kubectl.get_or_none("deployment", "two-gpus", namespace)),
        60,
        "deployment two-gpus to be Available",
    )
    pods = pods_of(kubectl, namespace, "two-gpus")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert condition(pod, "Ready")["status"] == "True"  # type: ignore[index]
        if cluster.local:
            assert pod["spec"]["nodeName"] in H100_NODES


def test_more_gpus_than_any_node_has_stays_pending_with_the_schedulers_reason(
    cluster: Cluster, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(deployment("nine-gpus", gpus=9, tolerate_gpu=True), namespace)

    def unschedulable() -> dict[str, Any] | None:
        pods = pods_of(kubectl, namespace, "nine-gpus")
        found = condition(pods[0], "PodScheduled") if pods else None
        return found if found and found.get("reason") == "Unschedulable" else None

    scheduled = wait_for(unschedulable, 60, "the 9-GPU pod to be marked Unschedulable")
    assert scheduled["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    if cluster.local:
        assert scheduled["message"].startswith(f"0/{len(nodes.NODES)} nodes are available")
    (pod,) = pods_of(kubectl, namespace, "nine-gpus")
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_pods_without_the_toleration_never_land_on_gpu_nodes(
    cluster: Cluster, kubectl: Kubectl, namespace: str
) -> None:
    require_local(cluster)
    kubectl.apply(deployment("cpu-only", replicas=4), namespace)
    wait_for(
        lambda: deployment_available(kubectl.get_or_none("deployment", "cpu-only", namespace)),
        60,
        "deployment cpu-only to be Available",
    )
    placed = {pod["spec"]["nodeName"] for pod in pods_of(kubectl, namespace, "cpu-only")}
    assert placed
    assert not placed & GPU_NODES, placed


def _waiting(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    waiting: dict[str, Any] = statuses[0].get("state", {}).get("waiting") or {}
    return waiting


@pytest.mark.parametrize("fault", ["ImagePullBackOff", "CreateContainerConfigError", "CrashLoopBackOff"])
def test_fault_annotation_gives_a_kubelet_like_status(
    fault: str, faults: tuple[str, ...], kubectl: Kubectl, namespace: str
) -> None:
    assert fault in faults
    name = fault.lower()
    annotations = {FAULT_ANNOTATION: fault}
    env = None
    if fault == "CrashLoopBackOff":
        annotations[EXIT_CODE_ANNOTATION] = "137"
    if fault == "CreateContainerConfigError":
        env = [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "model-credentials", "key": "token"}}}
        ]
    kubectl.apply(deployment(name, annotations=annotations, env=env), namespace)

    def faulted() -> dict[str, Any] | None:
        pods = pods_of(kubectl, namespace, name)
        if not pods or _waiting(pods[0]).get("reason") != fault:
            return None
        if fault == "CrashLoopBackOff" and pods[0]["status"]["containerStatuses"][0]["restartCount"] < 2:
            return None
        return pods[0]

    pod = wait_for(faulted, 60, f"the pod to report {fault}")
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is False
    for type_ in ("Ready", "ContainersReady"):
        found = condition(pod, type_)
        assert found is not None
        assert found["status"] == "False"
        assert found["reason"] == "ContainersNotReady"
        assert found["message"] == "containers with unready status: [server]"
    message = status["state"]["waiting"]["message"]
    if fault == "ImagePullBackOff":
        assert pod["status"]["phase"] == "Pending"
        assert message.startswith('Back-off pulling image "registry.example/modelplane/test:1"')
    elif fault == "CreateContainerConfigError":
        assert pod["status"]["phase"] == "Pending"
        assert message == 'secret "model-credentials" not found'
    else:
        assert pod["status"]["phase"] == "Running"
        assert status["lastState"]["terminated"]["exitCode"] == 137
        assert message.startswith("back-off 10s restarting failed container=server pod=")
        restarts = status["restartCount"]
        wait_for(
            lambda: (
                pods_of(kubectl, namespace, name)[0]["status"]["containerStatuses"][0]["restartCount"]
                > restarts
            ),
            30,
            "restartCount to keep increasing",
        )
    current = kubectl.get("deployment", name, namespace)
    assert not current["status"].get("readyReplicas"), current["status"]
    assert condition(current, "Available")["status"] == "False"  # type: ignore[index]


def test_missing_secret_name_can_come_from_an_annotation(
    faults: tuple[str, ...], kubectl: Kubectl, namespace: str
) -> None:
    annotations = {FAULT_ANNOTATION: "CreateContainerConfigError", MISSING_SECRET_ANNOTATION: "s3-creds"}
    kubectl.apply(deployment("named-secret", annotations=annotations), namespace)
    pod = wait_for(
        lambda: next(
            (p for p in pods_of(kubectl, namespace, "named-secret") if _waiting(p).get("message")), None
        ),
        60,
        "the pod to report CreateContainerConfigError",
    )
    assert _waiting(pod) == {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'}


def test_a_missing_secret_of_an_init_container_fails_that_init_container(
    faults: tuple[str, ...], kubectl: Kubectl, namespace: str
) -> None:
    """As a kubelet: the container that refers to the Secret fails, here an init container, so the
    pod is not Initialized and its main container waits in PodInitializing."""
    manifest = deployment("init-secret", annotations={FAULT_ANNOTATION: "CreateContainerConfigError"})
    pod_spec = manifest["spec"]["template"]["spec"]
    pod_spec["initContainers"] = [
        {
            "name": "fetch",
            "image": "registry.example/modelplane/test:1",
            "envFrom": [{"secretRef": {"name": "s3-creds"}}],
        }
    ]
    kubectl.apply(manifest, namespace)

    def failed() -> dict[str, Any] | None:
        pods = pods_of(kubectl, namespace, "init-secret")
        return pods[0] if pods and pods[0]["status"].get("initContainerStatuses") else None

    pod = wait_for(failed, 60, "the pod's init container to report CreateContainerConfigError")
    assert pod["status"]["phase"] == "Pending"
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["ready"] is False
    assert fetch["state"]["waiting"] == {
        "reason": "CreateContainerConfigError",
        "message": 'secret "s3-creds" not found',
    }
    assert _waiting(pod) == {"reason": "PodInitializing"}
    initialized = condition(pod, "Initialized")
    assert initialized is not None
    assert initialized["status"] == "False"
    assert initialized["message"] == "containers with incomplete status: [fetch]"
    ready = condition(pod, "Ready")
    assert ready is not None
    assert ready["message"] == "containers with unready status: [server]"


def test_the_fault_container_annotation_picks_the_failing_container(
    faults: tuple[str, ...], kubectl: Kubectl, namespace: str
) -> None:
    annotations = {FAULT_ANNOTATION: "CreateContainerConfigError", FAULT_CONTAINER_ANNOTATION: "server"}
    manifest = deployment("picked", annotations=annotations)
    manifest["spec"]["template"]["spec"]["initContainers"] = [
        {
            "name": "fetch",
            "image": "registry.example/modelplane/test:1",
            "envFrom": [{"secretRef": {"name": "x"}}],
        }
    ]
    kubectl.apply(manifest, namespace)
    pod = wait_for(
        lambda: next((p for p in pods_of(kubectl, namespace, "picked") if _waiting(p)), None),
        60,
        "the pod to report CreateContainerConfigError",
    )
    assert _waiting(pod) == {
        "reason": "CreateContainerConfigError",
        "message": 'secret "missing-secret" not found',
    }
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["state"]["terminated"]["reason"] == "Completed"
    assert condition(pod, "Initialized")["status"] == "True"  # type: ignore[index]


def test_deleting_the_owner_garbage_collects_its_dependents(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(deployment("owned", replicas=2), namespace)
    wait_for(lambda: len(pods_of(kubectl, namespace, "owned")) == 2, 60, "two pods of deployment owned")
    (replicaset,) = kubectl.get("replicasets", namespace=namespace, selector="app=owned")
    assert replicaset["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    kubectl.delete("deployment", "owned", namespace, wait=False)
    wait_for(
        lambda: (
            not kubectl.get("replicasets", namespace=namespace, selector="app=owned")
            and not pods_of(kubectl, namespace, "owned")
        ),
        60,
        "the ReplicaSet and pods of deployment owned to be garbage-collected",
    )


def test_the_hpa_controller_runs(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(deployment("scaled"), namespace)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "scaled"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }
    kubectl.apply(hpa, namespace)
    able = wait_for(
        lambda: condition(kubectl.get("hpa", "scaled", namespace), "AbleToScale"),
        60,
        "the HPA controller to set AbleToScale on hpa/scaled",
    )
    assert able["status"] == "True"


def _rule_checks(rules: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """`kubectl auth can-i` arguments for every verb on every resource a rule grants."""
    checks: list[tuple[str, ...]] = []
    for rule in rules:
        for group in rule.get("apiGroups", [""]):
            for resource in rule.get("resources", []):
                name, _, subresource = resource.partition("/")
                target: tuple[str, ...] = (f"{name}.{group}" if group else name,)
                if subresource:
                    target += (f"--subresource={subresource}",)
                checks += [(verb, *target) for verb in rule["verbs"]]
    return checks


def test_operator_identity_has_exactly_the_rules_files_permissions(cluster: Cluster) -> None:
    from modelplane.devcluster.paths import OPERATOR_RULES

    as_operator = cluster.operator_kubectl
    assert (
        as_operator("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}") == cluster.operator_user
    )
    for check in _rule_checks(manifests.load_rules(OPERATOR_RULES)):
        if check[1].startswith("modeldeployments") and not cluster.crds:
            continue  # RBAC allows it either way; can-i warns about unknown resources
        result = as_operator.run("auth", "can-i", *check, "--all-namespaces", check=False)
        assert result.stdout.strip() == "yes", f"operator cannot {' '.join(check)}: {result.stderr}"
    for verb, target in [("get", "secrets"), ("list", "secrets"), ("delete", "nodes"), ("create", "pods")]:
        result = as_operator.run("auth", "can-i", verb, target, "--all-namespaces", check=False)
        assert result.stdout.strip() == "no", f"operator can {verb} {target}"
    denied = as_operator.run("get", "secrets", "-A", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_the_audit_log_tells_the_operators_requests_apart(cluster: Cluster, namespace: str) -> None:
    require_local(cluster)
    assert cluster.audit_log is not None
    since = cluster.audit_log.mark()
    as_operator = cluster.operator_kubectl
    as_operator("get", "deployments", "-n", namespace)
    as_operator("create", "service", "clusterip", "audited", "--tcp=80:8080", "-n", namespace)
    cluster.kubectl("label", "service", "audited", "-n", namespace, "by=admin")

    def operator_create() -> list[dict[str, Any]]:
        return [
            e
            for e in cluster.audit_log.writes_by(cluster.operator_user, since)  # type: ignore[union-attr]
            if e["verb"] == "create" and e["objectRef"].get("resource") == "services"
        ]

    (created,) = wait_for(operator_create, 10, "the operator's create in the audit log")
    assert created["objectRef"]["namespace"] == namespace
    assert created["objectRef"]["name"] == "audited"
    reads = [summary(e) for e in cluster.audit_log.by_user(cluster.operator_user, since, {"list"})]
    assert any("deployments" in line for line in reads), reads
    admin_patch = [e for e in cluster.audit_log.writes_by("kubernetes-admin", since) if e["verb"] == "patch"]
    assert admin_patch, "the admin's label (a patch) is recorded under its own user"


def test_kubectl_on_path_works_against_this_api_server(kubectl: Kubectl, namespace: str) -> None:
    """kubectl's version may trail the API server's: explain, scale and wait are what tests use."""
    assert "nodeName" in kubectl("explain", "pods.spec.nodeName")
    kubectl.apply(deployment("scaled-by-kubectl"), namespace)
    kubectl("scale", "deployment/scaled-by-kubectl", "--replicas=2", "-n", namespace)
    kubectl(
        "wait", "--for=condition=Available", "--timeout=60s", "deployment/scaled-by-kubectl", "-n", namespace
    )
    assert kubectl.get("deployment", "scaled-by-kubectl", namespace)["status"]["readyReplicas"] == 2


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "modelplane"
    return subprocess.run(
        [str(executable), "devcluster", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_up_on_a_running_cluster_says_so_and_status_names_every_component(cluster: Cluster) -> None:
    require_local(cluster)
    assert cluster.dir is not None
    again = _cli("up", "--dir", str(cluster.dir))
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    status = _cli("status", "--dir", str(cluster.dir))
    assert status.returncode == 0, status.stdout + status.stderr
    for component in devcluster.COMPONENTS:
        line = next(line for line in status.stdout.splitlines() if line.startswith(component + " "))
        assert "healthy" in line, line
        assert str(cluster.dir / "logs") in line, line
    assert str(cluster.admin_kubeconfig) in status.stdout
    assert str(cluster.operator_kubeconfig) in status.stdout
    env = _cli("env", "--dir", str(cluster.dir))
    assert f"export KUBECONFIG={cluster.admin_kubeconfig}" in env.stdout.splitlines()


def test_up_refuses_a_folder_that_is_not_a_devcluster(cluster: Cluster, tmp_path: Path) -> None:
    require_local(cluster)
    (tmp_path / "notes.txt").write_text("mine")
    result = _cli("up", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert f"--dir {tmp_path} is not empty and holds no devcluster" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_bad_rules_file_fails_up_before_anything_starts(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_local(cluster)
    bad = tmp_path / "rules.yaml"
    bad.write_text(yaml.safe_dump([{"apiGroups": [""], "resources": ["pods"]}]))
    monkeypatch.setattr(devcluster, "OPERATOR_RULES", bad)
    with pytest.raises(manifests.RulesError, match="rule 0 has no verbs"):
        devcluster.up(tmp_path / "state", quiet=True)
    assert not (tmp_path / "state").exists()


def test_down_stops_exactly_what_up_started(cluster: Cluster, tmp_path: Path) -> None:
    """A second, short-lived devcluster: up, then down leaves none of its processes behind."""
    require_local(cluster)
    state_dir = tmp_path / "second"
    up = _cli("up", "--dir", str(state_dir))
    assert up.returncode == 0, up.stdout + up.stderr
    state = devcluster.load_state(state_dir)
    assert state is not None
    assert [p.name for p in state.procs] == list(devcluster.COMPONENTS)
    assert all(is_ours(p) for p in state.procs)
    down = _cli("down", "--dir", str(state_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(is_ours(p) for p in state.procs)
    assert not any(os.path.exists(f"/proc/{p.pid}") and is_ours(p) for p in state.procs)
    assert _cli("status", "--dir", str(state_dir)).returncode == 1
    assert (state_dir / "logs" / "kube-apiserver.log").exists()
