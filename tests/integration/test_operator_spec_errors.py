"""Bad input only the cluster can judge becomes a clear status, never a crash loop of the operator or
a half-deleted workload; and `kubectl explain` documents the API with the models' own words.

(What the schema and CEL can judge is rejected at `kubectl apply`: test_operator_rejections.py.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from modelplane.api.models import Autoscaling, Gpu, ModelSource, Startup
from modelplane.devcluster.procs import probe
from pydantic import BaseModel

from tests.integration._support.kube import Kubectl
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import (
    assert_condition,
    mdep,
    metric_total,
    scrape,
    wait_condition,
    wait_ready,
)

# -- what only the cluster can judge ----------------------------------------------------------------

# Accepted by the CRD (the affinity is free-form, and annotation values are bounded one by one, not
# in total), rejected when the operator applies the Deployment.
BAD_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "Near", "values": ["ssd"]}]}
            ]
        }
    }
}
CLUSTER_JUDGED: dict[str, tuple[dict[str, Any], str]] = {
    "bad-affinity-operator": ({"affinity": BAD_AFFINITY}, "spec.template.spec.affinity.nodeAffinity"),
    # 17 annotations of 16,000 bytes: each within the CRD's bound, together over the 256 KiB limit.
    "annotations-too-large": (
        {"podAnnotations": {f"note-{i}": "x" * 16000 for i in range(17)}},
        "spec.template.annotations",
    ),
    # Does not even fit the Deployment's schema: the API server answers 500 "failed to create typed
    # patch object", which retrying cannot fix either.
    "affinity-wrong-type": (
        {"affinity": {"nodeAffinity": "anywhere"}},
        ".spec.template.spec.affinity.nodeAffinity",
    ),
}


def test_a_spec_only_the_cluster_rejects_is_reported_and_never_stops_the_operator(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    pid = operator.pid
    # Server-side: a client-side apply would copy the large annotations into its own annotation.
    models = [mdep(name, **spec) for name, (spec, _) in CLUSTER_JUDGED.items()]
    kubectl.apply(models, namespace, server_side=True)
    kubectl.apply(mdep("healthy"), namespace)

    for name, (_, field) in CLUSTER_JUDGED.items():
        obj = wait_condition(kubectl, namespace, name, "Ready", "False", reason="InvalidSpec", message=field)
        # Stalled: only a change of the spec can help, so kstatus reports it as failed, not progressing.
        assert_condition(obj, "Stalled", "True", "InvalidSpec")
        assert_condition(obj, "Reconciling", "False")
        assert kubectl.get_or_none("deployment", name, namespace) is None
    wait_ready(kubectl, namespace, "healthy")

    assert operator.running, "the operator exited"
    assert operator.pid == pid, "the operator restarted"
    assert probe(operator.liveness_url)[0]
    samples = scrape(operator.metrics_url)
    assert metric_total(samples, "modelplane_reconciles_total") > 0


def test_a_bad_update_keeps_the_running_workload(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    """A rejected Deployment update leaves the old Deployment and its ready pods serving."""
    kubectl.apply(mdep("steady", replicas=2), namespace)
    wait_ready(kubectl, namespace, "steady")
    template = kubectl.get("deployment", "steady", namespace)["spec"]["template"]

    kubectl(
        "patch", "mdep", "steady", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"affinity": BAD_AFFINITY}}),
    )  # fmt: skip
    wait_condition(kubectl, namespace, "steady", "Ready", "False", reason="InvalidSpec", message='"Near"')
    deployment = kubectl.get("deployment", "steady", namespace)
    assert deployment["spec"]["template"] == template
    assert deployment["status"]["availableReplicas"] == 2

    kubectl(
        "patch",
        "mdep",
        "steady",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/affinity"}]',
    )
    wait_ready(kubectl, namespace, "steady")


# -- kubectl explain ---------------------------------------------------------------------------------


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("spec.gpu", Gpu),
        ("spec.model", ModelSource),
        ("spec.autoscaling", Autoscaling),
        ("spec.startup", Startup),
    ],
)
def test_kubectl_explain_prints_the_api_models_descriptions(
    kubectl: Kubectl, crds: tuple[str, ...], path: str, model: type[BaseModel]
) -> None:
    output = _words(kubectl("explain", f"mdep.{path}"))
    for name, info in model.model_fields.items():
        field = info.alias or name
        assert info.description, f"{model.__name__}.{name} has no description"
        assert f"{field} <" in output, f"kubectl explain mdep.{path} does not list {field}:\n{output}"
        assert _words(info.description) in output, f"{path}.{field}: {info.description!r} missing:\n{output}"
