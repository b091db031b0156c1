"""A ModelDeployment's life: drift repaired, spec updates rolled out, scaled, deleted with its children."""

from __future__ import annotations

import json
from typing import Any

from tests.integration._support.cluster import Cluster
from tests.integration._support.kube import Kubectl, wait_for
from tests.integration._support.operator import RUNTIME_IMAGE, OperatorProcess
from tests.integration._support.operator_checks import (
    CHILD_RESOURCES,
    assert_owned_by,
    children,
    container,
    get_mdep,
    mdep,
    pod_ready,
    pods_of,
    wait_condition,
    wait_ready,
)


def deployment_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kubectl.get("deployment", name, namespace)
    return found


def test_drift_in_the_children_is_repaired(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(mdep("drifty", replicas=2), namespace)
    obj = wait_ready(kubectl, namespace, "drifty")
    ns = ["-n", namespace]

    # Replicas changed by hand: the next read after the write must show the operator's value again.
    kubectl("scale", "deployment/drifty", "--replicas=5", *ns)
    wait_for(
        lambda: deployment_of(kubectl, namespace, "drifty")["spec"]["replicas"] == 2,
        30,
        "Deployment drifty's replicas to be set back to 2",
    )

    # The image changed by hand.
    kubectl("set", "image", "deployment/drifty", "model-server=registry.example/evil:1", *ns)
    wait_for(
        lambda: (
            container(deployment_of(kubectl, namespace, "drifty")["spec"]["template"]["spec"])["image"]
            == RUNTIME_IMAGE
        ),
        30,
        f"Deployment drifty's image to be set back to {RUNTIME_IMAGE}",
    )

    # The Service deleted: created again, owned again.
    old_uid = kubectl.get("service", "drifty", namespace)["metadata"]["uid"]
    kubectl("delete", "service", "drifty", *ns)

    def recreated() -> dict[str, Any] | None:
        service = kubectl.get_or_none("service", "drifty", namespace)
        return service if service and service["metadata"]["uid"] != old_uid else None

    service = wait_for(recreated, 30, "Service drifty to be created again")
    assert_owned_by(service, obj)

    # The PodDisruptionBudget deleted, likewise.
    kubectl("delete", "poddisruptionbudget", "drifty", *ns)
    wait_for(
        lambda: kubectl.get_or_none("poddisruptionbudget", "drifty", namespace),
        30,
        "PodDisruptionBudget drifty to be created again",
    )

    # Back to what the spec says: Ready, two pods of the operator's image, one child of each kind.
    obj = wait_ready(kubectl, namespace, "drifty")
    wait_for(
        lambda: len(pods_of(kubectl, namespace, "drifty")) == 2,
        60,
        "the hand-scaled and hand-edited pods to be replaced by two of the spec's",
    )
    owned = children(kubectl, namespace, obj)
    assert [len(owned[k]) for k in ("Deployment", "Service", "PodDisruptionBudget")] == [1, 1, 1]


def test_a_spec_update_is_rolled_out_and_observed(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(mdep("updated", replicas=2, runtime={"maxBatchSize": 8}), namespace)
    first = wait_ready(kubectl, namespace, "updated")
    generation = first["metadata"]["generation"]
    old_template = deployment_of(kubectl, namespace, "updated")["spec"]["template"]

    kubectl(
        "patch", "mdep", "updated", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"runtime": {"maxBatchSize": 16}}}),
    )  # fmt: skip
    obj = wait_ready(kubectl, namespace, "updated")  # Ready for the new generation, every condition
    assert obj["metadata"]["generation"] == generation + 1
    assert obj["status"]["observedGeneration"] == generation + 1
    assert {c["type"]: c["observedGeneration"] for c in obj["status"]["conditions"]} == {
        "Ready": generation + 1,
        "Reconciling": generation + 1,
        "Stalled": generation + 1,
    }

    deployment = deployment_of(kubectl, namespace, "updated")
    args = container(deployment["spec"]["template"]["spec"])["args"]
    assert args[args.index("--max-batch-size") + 1] == "16"
    assert deployment["spec"]["template"] != old_template
    # Rolled out: the Deployment controller saw the new template and every pod runs it.
    status = deployment["status"]
    assert status["observedGeneration"] == deployment["metadata"]["generation"]
    assert status["updatedReplicas"] == status["readyReplicas"] == 2
    pods = pods_of(kubectl, namespace, "updated")
    for pod in pods:
        pod_args = container(pod["spec"])["args"]
        assert pod_args[pod_args.index("--max-batch-size") + 1] == "16", pod["metadata"]["name"]


def test_kubectl_scale_scales_the_model(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(mdep("scaled"), namespace)
    wait_ready(kubectl, namespace, "scaled")

    kubectl("scale", "mdep/scaled", "--replicas=3", "-n", namespace)
    obj = wait_ready(kubectl, namespace, "scaled")
    assert obj["spec"]["replicas"] == 3
    assert (obj["status"]["replicas"], obj["status"]["readyReplicas"]) == (3, 3)
    pods = pods_of(kubectl, namespace, "scaled")
    assert len(pods) == 3
    assert all(pod_ready(p) for p in pods)
    assert deployment_of(kubectl, namespace, "scaled")["spec"]["replicas"] == 3
    # More than one replica: now a PodDisruptionBudget keeps one serving during drains.
    assert kubectl.get_or_none("poddisruptionbudget", "scaled", namespace) is not None
    scale = kubectl.json("get", "mdep", "scaled", "-n", namespace, "--subresource=scale")
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "modelplane.dev/model-deployment=scaled"

    # Down to zero: done as asked (Ready, reason ScaledToZero), no pods, no PDB left behind.
    kubectl("scale", "mdep/scaled", "--replicas=0", "-n", namespace)
    wait_condition(kubectl, namespace, "scaled", "Ready", "True", reason="ScaledToZero")
    wait_for(lambda: not pods_of(kubectl, namespace, "scaled"), 30, "mdep/scaled's pods to go")

    def counted_down() -> bool:
        status = (get_mdep(kubectl, namespace, "scaled") or {}).get("status") or {}
        return (status.get("replicas"), status.get("readyReplicas")) == (0, 0)

    wait_for(counted_down, 30, "status.replicas and readyReplicas of mdep/scaled to reach 0")
    wait_for(
        lambda: kubectl.get_or_none("poddisruptionbudget", "scaled", namespace) is None,
        30,
        "the PodDisruptionBudget of a model scaled to zero to be deleted",
    )


def test_scaling_an_autoscaled_model_is_refused_with_the_reason(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(mdep("elastic", autoscaling={"minReplicas": 1, "maxReplicas": 3}), namespace)
    wait_condition(kubectl, namespace, "elastic", "Ready", "True", timeout=60)
    before = get_mdep(kubectl, namespace, "elastic")
    assert before is not None

    result = kubectl.run("scale", "mdep/elastic", "--replicas=3", "-n", namespace, check=False)
    assert result.returncode != 0
    assert "spec.replicas must be unset when spec.autoscaling is set" in result.stderr
    after = get_mdep(kubectl, namespace, "elastic")
    assert after is not None
    assert "replicas" not in after["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_deleting_the_model_garbage_collects_its_children(
    operator: OperatorProcess, cluster: Cluster, kubectl: Kubectl, namespace: str
) -> None:
    since = cluster.audit_log.mark() if cluster.audit_log else 0
    # Autoscaled with minReplicas 2: every child kind exists (Deployment, Service, PDB, HPA).
    kubectl.apply(mdep("doomed", autoscaling={"minReplicas": 2, "maxReplicas": 3}), namespace)

    def all_children() -> dict[str, list[dict[str, Any]]] | None:
        obj = get_mdep(kubectl, namespace, "doomed")
        found = children(kubectl, namespace, obj) if obj else {}
        return found if found and all(len(items) == 1 for items in found.values()) else None

    wait_for(all_children, 60, "mdep/doomed to have one child of every kind")
    wait_for(lambda: pods_of(kubectl, namespace, "doomed"), 60, "mdep/doomed's pods")
    obj = get_mdep(kubectl, namespace, "doomed")
    assert obj is not None
    assert not obj["metadata"].get("finalizers"), obj["metadata"]

    # No finalizer: the delete completes at once, nothing waits on the operator.
    kubectl("delete", "mdep", "doomed", "-n", namespace, "--wait=true", "--timeout=30s")

    def leftovers() -> list[str]:
        names = []
        for resource in [*CHILD_RESOURCES, "replicasets.apps", "pods"]:
            for item in kubectl.get(
                resource, namespace=namespace, selector="modelplane.dev/model-deployment=doomed"
            ):
                names.append(f"{resource}/{item['metadata']['name']}")
        return names

    wait_for(
        lambda: not leftovers(), 60, "the garbage collector to delete every child and pod of mdep/doomed"
    )

    if cluster.audit_log is not None:
        # Never a finalizer, annotation or label write on the ModelDeployment itself: only its status.
        writes = [
            e
            for e in cluster.audit_log.writes_by(cluster.operator_user, since)
            if e.get("objectRef", {}).get("resource") == "modeldeployments"
            and e.get("objectRef", {}).get("namespace") == namespace
        ]
        assert writes, "the audit log shows no status write by the operator: is the check blind?"
        assert {e["objectRef"].get("subresource") for e in writes} == {"status"}, [
            (e["verb"], e["objectRef"]) for e in writes
        ]
