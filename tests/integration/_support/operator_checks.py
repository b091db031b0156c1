"""What the operator's integration tests read and wait for: ModelDeployments, their conditions,
children and pods, the nodes they land on, the operator's metrics and its writes in the audit log.

Every wait fails with what was last seen (conditions, not just "timed out"), so a failure explains
itself together with the diagnostics the fixtures print.
"""

from __future__ import annotations

import re
import secrets
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelplane.api.models import SELECTOR_LABEL
from modelplane.devcluster import nodes as fake_nodes

from tests.integration._support.audit import AuditLog, summary
from tests.integration._support.kube import Kubectl, KubectlError, WaitTimeout, condition, wait_for

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
MDEP = "modeldeployment"
API_VERSION = "modelplane.dev/v1alpha1"
# The children a ModelDeployment may own, as kubectl names them, with their kinds.
CHILD_RESOURCES = {
    "deployments.apps": "Deployment",
    "services": "Service",
    "poddisruptionbudgets.policy": "PodDisruptionBudget",
    "horizontalpodautoscalers.autoscaling": "HorizontalPodAutoscaler",
}
GPU_RESOURCE = fake_nodes.GPU_RESOURCE
PRODUCT_LABEL = fake_nodes.PRODUCT_LABEL
H100 = fake_nodes.H100
MIG_1G_10GB = fake_nodes.MIG_1G_10GB
# Small requests so that many test models fit on the fake nodes at once.
SMALL_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


# -- manifests ------------------------------------------------------------------------------------


def example(name: str) -> dict[str, Any]:
    """One of examples/*.yaml, as a dict."""
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return document


def mdep(
    name: str, *, uri: str = "https://models.example.com/resnet18/model.pt", **spec: Any
) -> dict[str, Any]:
    """A ModelDeployment with small CPU/memory requests unless ``resources`` is given."""
    body: dict[str, Any] = {"model": {"uri": uri}, "resources": SMALL_RESOURCES, **spec}
    return {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}


# -- reading ModelDeployments ----------------------------------------------------------------------


def get_mdep(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = kubectl.get_or_none(MDEP, name, namespace)
    return found


def conditions_text(obj: Mapping[str, Any] | None) -> str:
    """The conditions in one line each, for failure messages."""
    if not obj:
        return "(no object)"
    status = obj.get("status") or {}
    lines = [
        f"generation {obj.get('metadata', {}).get('generation')}, "
        f"status.observedGeneration {status.get('observedGeneration')}, "
        f"replicas {status.get('replicas')}, readyReplicas {status.get('readyReplicas')}"
    ]
    for item in status.get("conditions") or []:
        lines.append(
            f"  {item.get('type')}={item.get('status')} reason={item.get('reason')} "
            f"gen={item.get('observedGeneration')}: {item.get('message')}"
        )
    return "\n".join(lines)


def is_current(obj: Mapping[str, Any]) -> bool:
    """The status describes the newest spec: status and every condition carry metadata.generation."""
    generation = obj.get("metadata", {}).get("generation")
    status = obj.get("status") or {}
    if status.get("observedGeneration") != generation:
        return False
    return all(c.get("observedGeneration") == generation for c in status.get("conditions") or [])


def wait_condition(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    type_: str,
    status: str,
    *,
    reason: str | None = None,
    message: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Wait until condition `type_` has `status` (and `reason`, and `message` as a substring) for the
    current generation; returns the ModelDeployment then."""
    last: list[dict[str, Any] | None] = [None]

    def check() -> dict[str, Any] | None:
        obj = get_mdep(kubectl, namespace, name)
        last[0] = obj
        found = condition(obj, type_)
        if obj is None or found is None or not is_current(obj) or found.get("status") != status:
            return None
        if reason is not None and found.get("reason") != reason:
            return None
        if message is not None and message not in str(found.get("message")):
            return None
        return obj

    want = (
        f"{type_}={status}" + (f" reason {reason}" if reason else "") + (f" ~{message!r}" if message else "")
    )
    try:
        return wait_for(check, timeout, f"{namespace}/{name} to have {want}")
    except WaitTimeout as error:
        raise WaitTimeout(f"{error}\nlast seen:\n{conditions_text(last[0])}") from None


def wait_ready(kubectl: Kubectl, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    return wait_condition(kubectl, namespace, name, "Ready", "True", timeout=timeout)


def assert_condition(obj: Mapping[str, Any], type_: str, status: str, reason: str | None = None) -> None:
    found = condition(dict(obj), type_)
    assert found is not None, f"no {type_} condition:\n{conditions_text(obj)}"
    assert found["status"] == status, f"{type_} is {found['status']}, not {status}:\n{conditions_text(obj)}"
    if reason is not None:
        assert found.get("reason") == reason, f"{type_} reason:\n{conditions_text(obj)}"


# -- children, pods, events ----------------------------------------------------------------------


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def children(kubectl: Kubectl, namespace: str, owner: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every object of each child kind in the namespace whose controller is `owner`, by kind."""
    uid = owner["metadata"]["uid"]
    found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CHILD_RESOURCES.values()}
    for resource, kind in CHILD_RESOURCES.items():
        for item in kubectl.get(resource, namespace=namespace):
            ref = controller_ref(item)
            if ref is not None and ref.get("uid") == uid:
                found[kind].append(item)
    return found


def assert_owned_by(child: Mapping[str, Any], owner: Mapping[str, Any]) -> None:
    """One owner reference, to the ModelDeployment, as its controller (garbage collection follows it)."""
    what = f"{child.get('kind')} {child['metadata']['name']}"
    refs = child["metadata"].get("ownerReferences") or []
    assert len(refs) == 1, f"{what} has owner references {refs}"
    (ref,) = refs
    assert ref["apiVersion"] == API_VERSION, (what, ref)
    assert ref["kind"] == "ModelDeployment", (what, ref)
    assert ref["name"] == owner["metadata"]["name"], (what, ref)
    assert ref["uid"] == owner["metadata"]["uid"], (what, ref)
    assert ref.get("controller") is True, (what, ref)
    assert ref.get("blockOwnerDeletion") is True, (what, ref)


def pods_of(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    """The ModelDeployment's pods that are not being deleted."""
    pods: list[dict[str, Any]] = kubectl.get("pods", namespace=namespace, selector=f"{SELECTOR_LABEL}={name}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def pod_ready(pod: Mapping[str, Any]) -> bool:
    found = condition(dict(pod), "Ready")
    return bool(found and found.get("status") == "True")


def events_for(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    """Events about the ModelDeployment `name`, oldest first."""
    items: list[dict[str, Any]] = kubectl.get(
        "events",
        namespace=namespace,
        field_selector=f"involvedObject.kind=ModelDeployment,involvedObject.name={name}",
    )
    return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e["metadata"]["creationTimestamp"]))


def container(pod_spec: Mapping[str, Any], name: str = "model-server") -> dict[str, Any]:
    return dict(next(c for c in pod_spec["containers"] if c["name"] == name))


# -- nodes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Nodes:
    """The cluster's nodes by what they offer, read from the live objects (any cluster)."""

    gpu: frozenset[str]  # allocatable nvidia.com/gpu > 0
    h100: frozenset[str]
    mig: frozenset[str]  # allocatable nvidia.com/mig-1g.10gb > 0
    plain: frozenset[str]  # no GPU, no MIG device, no nvidia.com/gpu taint

    def require_gpus(self) -> None:
        if not self.gpu or not self.h100:
            pytest.skip(
                "no node advertises nvidia.com/gpu with the H100 product label: on kind, add the fake "
                "GPU nodes with KWOK (README, kind path)"
            )

    def require_mig(self) -> None:
        if not self.mig:
            pytest.skip(f"no node advertises {MIG_1G_10GB} (on kind, add the fake nodes with KWOK)")


def _count(node: Mapping[str, Any], resource: str) -> int:
    value = str(node.get("status", {}).get("allocatable", {}).get(resource, "0"))
    return int(value) if value.isdigit() else 0


def live_nodes(kubectl: Kubectl) -> Nodes:
    gpu, h100, mig, plain = set(), set(), set(), set()
    for node in kubectl.get("nodes"):
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        taints = {t.get("key") for t in node.get("spec", {}).get("taints") or []}
        if _count(node, GPU_RESOURCE) > 0:
            gpu.add(name)
            if labels.get(PRODUCT_LABEL) == H100:
                h100.add(name)
        if _count(node, MIG_1G_10GB) > 0:
            mig.add(name)
        if name not in gpu and name not in mig and fake_nodes.GPU_TAINT_KEY not in taints:
            plain.add(name)
    return Nodes(frozenset(gpu), frozenset(h100), frozenset(mig), frozenset(plain))


# -- the operator's metrics -------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(url: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value} (``name`` alone without labels)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def metric_total(samples: Mapping[str, float], name: str) -> float:
    """The sum of a metric over all its label sets."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


# -- the audit log -----------------------------------------------------------------------------------


def operator_writes(
    audit: AuditLog, user: str, since: int, namespace: str | None = None
) -> list[dict[str, Any]]:
    """The operator's write requests after `since` (optionally only those in `namespace`)."""
    writes = audit.writes_by(user, since)
    if namespace is not None:
        writes = [e for e in writes if e.get("objectRef", {}).get("namespace") == namespace]
    return writes


def written_resources(events: Iterable[Mapping[str, Any]]) -> set[str]:
    """`resource[/subresource]` of each write, e.g. {"deployments", "modeldeployments/status"}."""
    out = set()
    for event in events:
        ref = event.get("objectRef") or {}
        out.add(ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else ""))
    return out


def describe_writes(events: Iterable[Mapping[str, Any]], limit: int = 30) -> str:
    lines = [summary(dict(e)) for e in events]
    return "\n".join(lines[:limit]) + (f"\n... {len(lines) - limit} more" if len(lines) > limit else "")


# -- namespaces shared by a module ---------------------------------------------------------------


@contextmanager
def shared_namespace(kubectl: Kubectl, prefix: str) -> Iterator[str]:
    """A namespace for a whole module (the `namespace` fixture gives one per test)."""
    name = f"t-{prefix}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    wait_for(
        lambda: kubectl.get_or_none("serviceaccount", "default", name),
        30,
        f"the default ServiceAccount in namespace {name}",
    )
    try:
        yield name
    finally:
        with suppress(KubectlError):
            kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
