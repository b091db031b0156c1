"""The fake nodes: declared once here, so tests can compute what the scheduler will say.

The labels are the ones NVIDIA's GPU feature discovery (GFD) and MIG manager write on real nodes;
the resources are what NVIDIA's device plugin advertises. GPU nodes carry the taint GPU node pools
usually have, so a pod without the toleration never lands on them. KWOK manages every node with
the annotation ``kwok.x-k8s.io/node: fake``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"
GPU_TAINT_EFFECT = "NoSchedule"
PRODUCT_LABEL = "nvidia.com/gpu.product"
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
MIG_1G_10GB = "nvidia.com/mig-1g.10gb"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def manifest(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}


GPU_TAINT = Taint(GPU_TAINT_KEY, GPU_TAINT_VALUE, GPU_TAINT_EFFECT)


@dataclass(frozen=True)
class FakeNode:
    """One fake node. ``resources`` is both capacity and allocatable (KWOK runs no system daemons)."""

    name: str
    labels: Mapping[str, str]
    resources: Mapping[str, str]
    taints: tuple[Taint, ...] = ()
    internal_ip: str = ""

    @property
    def gpus(self) -> int:
        return int(self.resources.get(GPU_RESOURCE, "0"))

    def allocatable(self, resource: str) -> int:
        """A count resource's allocatable amount (0 when the node has none)."""
        return int(self.resources.get(resource, "0"))

    def manifest(self) -> dict[str, Any]:
        """The Node object to create: KWOK fills in conditions, addresses and heartbeats."""
        spec: dict[str, Any] = {}
        if self.taints:
            spec["taints"] = [t.manifest() for t in self.taints]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": dict(self.labels),
            },
            "spec": spec,
            "status": {
                "capacity": dict(self.resources),
                "allocatable": dict(self.resources),
                "addresses": [
                    {"type": "InternalIP", "address": self.internal_ip},
                    {"type": "Hostname", "address": self.name},
                ],
            },
        }


def _base_labels(name: str, instance_type: str, zone: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/zone": zone,
        "type": "kwok",
    }


_DRIVER_LABELS = {
    "nvidia.com/gpu.present": "true",
    "nvidia.com/cuda.driver.major": "12",
    "nvidia.com/cuda.driver.minor": "8",
    "nvidia.com/cuda.driver.rev": "0",
    "nvidia.com/cuda.runtime.major": "12",
    "nvidia.com/cuda.runtime.minor": "8",
    "nvidia.com/gfd.timestamp": "1735689600",
    "nvidia.com/gpu.sharing-strategy": "none",
    "nvidia.com/gpu.replicas": "1",
}


def _h100(name: str, zone: str, ip: str) -> FakeNode:
    labels = (
        _base_labels(name, "fake-8xh100", zone)
        | _DRIVER_LABELS
        | {
            PRODUCT_LABEL: H100,
            "nvidia.com/gpu.memory": "81559",
            "nvidia.com/gpu.count": "8",
            "nvidia.com/gpu.family": "hopper",
            "nvidia.com/gpu.compute.major": "9",
            "nvidia.com/gpu.compute.minor": "0",
            "nvidia.com/gpu.machine": "DGX-H100",
            "nvidia.com/mig.capable": "true",
        }
    )
    resources = {
        "cpu": "224",
        "memory": "2015Gi",
        "ephemeral-storage": "3500Gi",
        "pods": "110",
        GPU_RESOURCE: "8",
    }
    return FakeNode(name, labels, resources, (GPU_TAINT,), ip)


def _a100_mig(name: str, zone: str, ip: str) -> FakeNode:
    """One A100 80GB partitioned into seven 1g.10gb instances, advertised with the mixed strategy.

    Under ``mixed`` a MIG-enabled card contributes nothing to ``nvidia.com/gpu`` (the device plugin
    reports 0), so whole-GPU requests never land here.
    """
    profile = "nvidia.com/mig-1g.10gb"
    labels = (
        _base_labels(name, "fake-1xa100-mig", zone)
        | _DRIVER_LABELS
        | {
            PRODUCT_LABEL: A100,
            "nvidia.com/gpu.memory": "81920",
            "nvidia.com/gpu.count": "1",
            "nvidia.com/gpu.family": "ampere",
            "nvidia.com/gpu.compute.major": "8",
            "nvidia.com/gpu.compute.minor": "0",
            "nvidia.com/gpu.machine": "DGX-A100",
            "nvidia.com/mig.capable": "true",
            "nvidia.com/mig.strategy": "mixed",
            "nvidia.com/mig.config": "all-1g.10gb",
            "nvidia.com/mig.config.state": "success",
            f"{profile}.count": "7",
            f"{profile}.memory": "9728",
            f"{profile}.multiprocessors": "14",
            f"{profile}.product": f"{A100}-MIG-1g.10gb",
            f"{profile}.replicas": "1",
            f"{profile}.slices.gi": "1",
            f"{profile}.slices.ci": "1",
            f"{profile}.engines.copy": "1",
            f"{profile}.engines.decoder": "0",
            f"{profile}.engines.encoder": "0",
            f"{profile}.engines.jpeg": "0",
            f"{profile}.engines.ofa": "0",
        }
    )
    resources = {
        "cpu": "128",
        "memory": "1007Gi",
        "ephemeral-storage": "1800Gi",
        "pods": "110",
        GPU_RESOURCE: "0",
        MIG_1G_10GB: "7",
    }
    return FakeNode(name, labels, resources, (GPU_TAINT,), ip)


def _cpu(name: str, zone: str, ip: str) -> FakeNode:
    resources = {"cpu": "32", "memory": "128Gi", "ephemeral-storage": "500Gi", "pods": "110"}
    return FakeNode(name, _base_labels(name, "fake-cpu-32", zone), resources, (), ip)


NODES: tuple[FakeNode, ...] = (
    _h100("gpu-h100-0", "zone-a", "10.128.0.10"),
    _h100("gpu-h100-1", "zone-b", "10.128.0.11"),
    _a100_mig("gpu-a100-mig-0", "zone-a", "10.128.0.12"),
    _cpu("cpu-0", "zone-a", "10.128.0.20"),
)


def nodes_with(resource: str) -> tuple[FakeNode, ...]:
    """The nodes with a non-zero amount of a resource (e.g. nvidia.com/gpu)."""
    return tuple(node for node in NODES if node.allocatable(resource) > 0)


def node_named(name: str) -> FakeNode:
    for node in NODES:
        if node.name == name:
            return node
    raise KeyError(f"no fake node named {name!r}")
