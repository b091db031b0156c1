"""Desired vs observed: no apply for what the API server merely defaulted or rewrote; an apply for drift."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from modelplane.api.models import ModelDeploymentSpec
from modelplane.render.children import Owner, build_children
from modelplane.render.compare import (
    HASH_ANNOTATION,
    differences,
    needs_apply,
    parse_quantity,
    with_desired_hash,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("1000m", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        ("4Gi", Decimal(4 * 2**30)),
        ("4096Mi", Decimal(4 * 2**30)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        (2, Decimal(2)),
    ],
)
def test_parse_quantity(text: Any, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "1Gb", "", "1.2.3"])
def test_parse_quantity_rejects(text: str) -> None:
    assert parse_quantity(text) is None


def deployment() -> dict[str, Any]:
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "s3://b/m"},
            "replicas": 2,
            "gpu": {"count": 1, "product": ["P"]},
            "resources": {"requests": {"cpu": "1000m", "memory": "4096Mi"}, "limits": {"memory": "8Gi"}},
        }
    )
    return build_children(spec, Owner("m", "ns", "uid"))[0]


def server_view(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns for an applied Deployment: defaults, normalised quantities, status."""
    observed = copy.deepcopy(desired)
    observed["metadata"].update(
        {"uid": "x", "resourceVersion": "42", "generation": 3, "managedFields": [{"manager": "modelplane"}]}
    )
    observed["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    spec = observed["spec"]
    spec["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    pod = spec["template"]["spec"]
    pod.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"})
    for container in pod["containers"] + pod.get("initContainers", []):
        container["imagePullPolicy"] = "IfNotPresent"
        container["terminationMessagePath"] = "/dev/termination-log"
        container["resources"]["requests"]["cpu"] = "1"
        container["resources"]["requests"]["memory"] = "4Gi"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container:
                container[probe]["httpGet"]["scheme"] = "HTTP"
                container[probe]["successThreshold"] = 1
    pod["volumes"][0]["emptyDir"] = {}
    observed["status"] = {"replicas": 2, "observedGeneration": 3}
    return observed


def test_a_freshly_applied_object_needs_nothing() -> None:
    desired = deployment()
    assert needs_apply(desired, server_view(desired)) == []


def test_absent_needs_an_apply() -> None:
    assert needs_apply(deployment(), None) == ["absent"]


def test_replicas_changed_by_hand_is_drift() -> None:
    desired = deployment()
    observed = server_view(desired)
    observed["spec"]["replicas"] = 5
    assert needs_apply(desired, observed) == [".spec.replicas"]


def test_image_changed_by_hand_is_drift() -> None:
    desired = deployment()
    observed = server_view(desired)
    observed["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    assert needs_apply(desired, observed) == [".spec.template.spec.containers[model-server].image"]


def test_a_removed_label_is_drift_but_an_added_one_is_not() -> None:
    desired = deployment()
    observed = server_view(desired)
    observed["metadata"]["labels"]["someone-else"] = "x"
    assert needs_apply(desired, observed) == []
    del observed["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert needs_apply(desired, observed) == [".metadata.labels.app.kubernetes.io/managed-by"]


def test_a_quantity_that_differs_in_value_is_drift() -> None:
    desired = deployment()
    observed = server_view(desired)
    observed["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "16Gi"
    assert needs_apply(desired, observed) == [
        ".spec.template.spec.containers[model-server].resources.limits.memory"
    ]


def test_a_changed_intent_is_seen_through_the_hash_even_when_it_only_removes() -> None:
    desired = deployment()
    observed = server_view(desired)
    smaller = copy.deepcopy(desired)
    del smaller["spec"]["template"]["spec"]["tolerations"]
    smaller = with_desired_hash(smaller)
    assert (
        smaller["metadata"]["annotations"][HASH_ANNOTATION]
        != desired["metadata"]["annotations"][HASH_ANNOTATION]
    )
    # A subset check alone would miss it (only the hash itself differs).
    assert differences(smaller, observed) == [f".metadata.annotations.{HASH_ANNOTATION}"]
    assert needs_apply(smaller, observed) == ["desired state changed"]


def test_extra_containers_from_others_are_tolerated_but_list_length_of_args_is_not() -> None:
    desired = deployment()
    observed = server_view(desired)
    observed["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "s"})
    assert needs_apply(desired, observed) == []
    observed["spec"]["template"]["spec"]["containers"][0]["args"].append("--extra")
    assert needs_apply(desired, observed) == [".spec.template.spec.containers[model-server].args"]


def test_zero_values_dropped_by_the_server_are_equal() -> None:
    assert differences({"a": {"b": False, "c": [], "d": {}, "e": ""}}, {"a": {}}) == []
    assert differences({"a": 0}, {}) == []
    assert differences({"a": 1}, {}) == [".a"]


def test_hash_is_stable_and_ignores_itself() -> None:
    desired = deployment()
    again = with_desired_hash(desired)
    assert (
        again["metadata"]["annotations"][HASH_ANNOTATION]
        == desired["metadata"]["annotations"][HASH_ANNOTATION]
    )
