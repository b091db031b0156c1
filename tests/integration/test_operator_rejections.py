"""Bad input is rejected by the API server (schema and CEL), with a message naming the field, and
nothing already running is harmed: every case of tests/unit/data/invalid-modeldeployments.yaml is
applied beside one Ready model, which must stay Ready throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration._support.cluster import Cluster
from tests.integration._support.kube import Kubectl, condition
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import (
    assert_condition,
    get_mdep,
    mdep,
    pods_of,
    shared_namespace,
    wait_ready,
)

INVALID = Path(__file__).resolve().parents[1] / "unit" / "data" / "invalid-modeldeployments.yaml"
FIELD_ANNOTATION = "test.modelplane.dev/field"
SKIPPED_RULES_NOTE = "<nil>: Invalid value: null: some validation rules were not checked"
DOCUMENTS: list[dict[str, Any]] = [d for d in yaml.safe_load_all(INVALID.read_text()) if d]


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, crds: tuple[str, ...]) -> Iterator[str]:
    """One namespace for the module: the rejections below all happen beside one running model."""
    with shared_namespace(cluster.kubectl, "invalid") as name:
        yield name


@pytest.fixture(scope="module")
def bystander(operator: OperatorProcess, kubectl_module: Kubectl, namespace: str) -> dict[str, Any]:
    """A valid, Ready model in the namespace: each rejection must leave it untouched."""
    kubectl_module.apply(mdep("bystander", replicas=2), namespace)
    return wait_ready(kubectl_module, namespace, "bystander")


@pytest.fixture(scope="module")
def kubectl_module(cluster: Cluster) -> Kubectl:
    return cluster.kubectl


def test_the_data_file_has_enough_cases() -> None:
    assert len(DOCUMENTS) >= 15
    assert all(FIELD_ANNOTATION in d["metadata"]["annotations"] for d in DOCUMENTS)


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d["metadata"]["name"] for d in DOCUMENTS])
def test_invalid_manifest_is_rejected_naming_the_field(
    kubectl: Kubectl, namespace: str, bystander: dict[str, Any], document: dict[str, Any]
) -> None:
    field = document["metadata"]["annotations"][FIELD_ANNOTATION]
    result = kubectl.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(document), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    error = " ".join(result.stderr.split())
    assert field in error, f"the error does not name {field}: {error}"
    # Every cause is reported at a field path, not only named in its message: a rule on the root
    # object would be reported at <nil>. (The API server's own note after schema errors, that CEL
    # rules were skipped, is always at <nil>.)
    assert "<nil>" not in error.replace(SKIPPED_RULES_NOTE, ""), error
    assert kubectl.get_or_none("mdep", document["metadata"]["name"], namespace) is None


def test_nothing_running_was_harmed_by_the_rejections(
    kubectl: Kubectl, namespace: str, bystander: dict[str, Any]
) -> None:
    """Ready all along: the same transition time, the same generation, the same two ready pods."""
    now = get_mdep(kubectl, namespace, "bystander")
    assert now is not None
    assert_condition(now, "Ready", "True")
    before, after = condition(bystander, "Ready"), condition(now, "Ready")
    assert before is not None
    assert after is not None
    assert after["lastTransitionTime"] == before["lastTransitionTime"]
    assert now["metadata"]["generation"] == bystander["metadata"]["generation"]
    assert len(pods_of(kubectl, namespace, "bystander")) == 2
    assert {m["metadata"]["name"] for m in kubectl.get("mdep", namespace=namespace)} == {"bystander"}
