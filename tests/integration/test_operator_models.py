"""The examples become owned, correctly scheduled, Ready workloads on the real control plane.

The shared operator reconciles; the scheduler places pods against the fake nodes' real
nvidia.com/gpu and MIG capacity, labels and taints.
"""

from __future__ import annotations

from typing import Any

from tests.integration._support.kube import Kubectl, wait_for
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import (
    GPU_RESOURCE,
    MIG_1G_10GB,
    assert_owned_by,
    children,
    container,
    events_for,
    example,
    live_nodes,
    mdep,
    pod_ready,
    pods_of,
    wait_ready,
)


def test_gpu_example_becomes_owned_children_on_h100_nodes_and_ready(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    nodes = live_nodes(kubectl)
    nodes.require_gpus()
    manifest = example("gpu-single")  # 2 replicas, 1 H100 (>= 80 GB) each
    name = manifest["metadata"]["name"]
    kubectl.apply(manifest, namespace)

    kubectl("wait", "--for=condition=Ready", f"mdep/{name}", "-n", namespace, "--timeout=90s")
    obj = wait_ready(kubectl, namespace, name)  # and for the newest generation

    owned = children(kubectl, namespace, obj)
    assert {kind: len(items) for kind, items in owned.items()} == {
        "Deployment": 1,
        "Service": 1,
        "PodDisruptionBudget": 1,
        "HorizontalPodAutoscaler": 0,
    }
    for items in owned.values():
        for child in items:
            assert child["metadata"]["name"] == name
            assert_owned_by(child, obj)

    pods = pods_of(kubectl, namespace, name)
    assert len(pods) == 2
    for pod in pods:
        assert pod_ready(pod)
        node = pod["spec"]["nodeName"]
        assert node in nodes.h100, f"pod {pod['metadata']['name']} landed on {node}, not an H100 node"
        assert node not in nodes.plain
        limits = container(pod["spec"])["resources"]["limits"]
        assert limits[GPU_RESOURCE] == "1"

    status = obj["status"]
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["selector"] == f"modelplane.dev/model-deployment={name}"


def test_status_endpoints_name_the_service_that_routes_to_the_ready_pods(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(mdep("served", replicas=2), namespace)
    obj = wait_ready(kubectl, namespace, "served")
    (service,) = children(kubectl, namespace, obj)["Service"]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    host = f"{service['metadata']['name']}.{namespace}.svc"
    assert obj["status"]["endpoints"] == {
        "http": f"http://{host}:{ports['http']}",
        "grpc": f"{host}:{ports['grpc']}",
    }
    assert (ports["http"], ports["grpc"], ports["metrics"]) == (8000, 8001, 8002)

    pod_ips = {p["status"]["podIP"] for p in pods_of(kubectl, namespace, "served")}

    def ready_addresses() -> set[str] | None:
        slices = kubectl.get(
            "endpointslices",
            namespace=namespace,
            selector=f"kubernetes.io/service-name={service['metadata']['name']}",
        )
        addresses = {
            address
            for item in slices
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
            for address in endpoint.get("addresses") or []
        }
        return addresses if addresses == pod_ips else None

    wait_for(ready_addresses, 30, f"the Service's EndpointSlices to list the ready pods {pod_ips}")


def test_autoscaled_example_gets_an_hpa_that_owns_the_replicas(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    live_nodes(kubectl).require_gpus()
    manifest = example("autoscaled")  # minReplicas 2, maxReplicas 4, queue depth target
    name = manifest["metadata"]["name"]
    kubectl.apply(manifest, namespace)
    # The HPA controller raises the new Deployment to minReplicas on its next sync (15 s period).
    obj = wait_ready(kubectl, namespace, name, timeout=90)

    owned = children(kubectl, namespace, obj)
    assert {kind: len(items) for kind, items in owned.items()} == {
        "Deployment": 1,
        "Service": 1,
        "PodDisruptionBudget": 1,
        "HorizontalPodAutoscaler": 1,
    }
    (hpa,) = owned["HorizontalPodAutoscaler"]
    assert_owned_by(hpa, obj)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "nv_inference_pending_request_count"

    deployment = kubectl.json("get", "deployment", name, "-n", namespace, "--show-managed-fields")
    assert deployment["spec"]["replicas"] == 2
    # Server-side apply: the operator's manager does not own replicas, so it never fights the HPA.
    managed = {
        entry["manager"]: entry.get("fieldsV1", {})
        for entry in deployment["metadata"]["managedFields"]
        if entry.get("operation") == "Apply"
    }
    assert "f:replicas" not in managed["modelplane"].get("f:spec", {})
    assert obj["status"]["readyReplicas"] == 2


def test_each_example_lands_on_the_nodes_its_hardware_needs(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    """CPU on the plain node; MIG on the A100; product or memory affinity on the H100s."""
    nodes = live_nodes(kubectl)
    nodes.require_gpus()
    nodes.require_mig()
    models: dict[str, tuple[dict[str, Any], frozenset[str]]] = {
        "quickstart": (example("cpu-quickstart"), nodes.plain),
        "small-mig": (example("mig"), nodes.mig),
        "llm-shard": (example("multi-gpu-h100"), nodes.h100),  # 4 GPUs, minMemoryGB 80
        # 85 vendor GB = 81063 MiB <= 81559 MiB (an H100 80GB's nvidia.com/gpu.memory)
        "memory-85": (mdep("memory-85", gpu={"count": 1, "minMemoryGB": 85}), nodes.h100),
        "product": (mdep("product", gpu={"count": 1, "product": ["NVIDIA-H100-80GB-HBM3"]}), nodes.h100),
    }
    kubectl.apply([manifest for manifest, _ in models.values()], namespace)
    for name, (_, allowed) in models.items():
        wait_ready(kubectl, namespace, name)
        for pod in pods_of(kubectl, namespace, name):
            node = pod["spec"]["nodeName"]
            assert node in allowed, (
                f"{name}: pod {pod['metadata']['name']} is on {node}, not on {sorted(allowed)}"
            )

    (mig_pod,) = pods_of(kubectl, namespace, "small-mig")
    limits = container(mig_pod["spec"])["resources"]["limits"]
    assert limits[MIG_1G_10GB] == "1"
    assert GPU_RESOURCE not in limits
    (cpu_pod,) = pods_of(kubectl, namespace, "quickstart")
    assert not any(key.startswith("nvidia.com/") for key in container(cpu_pod["spec"])["resources"]["limits"])
    assert not cpu_pod["spec"].get("tolerations") or all(
        t.get("key") != GPU_RESOURCE for t in cpu_pod["spec"]["tolerations"]
    )


def test_events_on_the_model_deployment_tell_what_the_operator_did(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(mdep("told", replicas=2), namespace)
    wait_ready(kubectl, namespace, "told")

    def created() -> list[str] | None:
        reasons = [(e["reason"], e["message"]) for e in events_for(kubectl, namespace, "told")]
        messages = sorted(m for r, m in reasons if r == "Created")
        return messages if ("Available", "2/2 replicas available") in reasons else None

    messages = wait_for(created, 30, "Created and Available events on mdep/told")
    # One Created event per child, never repeated (a second one would mean a duplicate apply).
    assert messages == [
        "Created Deployment told",
        "Created PodDisruptionBudget told",
        "Created Service told",
    ]
    events = events_for(kubectl, namespace, "told")
    assert all(e["source"]["component"] == "modelplane-operator" for e in events)
    assert all(e["type"] == "Normal" for e in events), [(e["type"], e["reason"]) for e in events]
    available = [e for e in events if e["reason"] == "Available"]
    assert len(available) == 1, [(e["reason"], e["message"]) for e in events]
