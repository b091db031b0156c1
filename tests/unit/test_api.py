"""The API: every bad input is rejected by pydantic *and* by the CRD (schema + CEL), naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from modelplane.api.errors import describe
from modelplane.api.models import ModelDeployment, ModelDeploymentSpec
from pydantic import ValidationError

from tests.unit import crdcheck

ROOT = Path(__file__).resolve().parents[2]
INVALID = [
    d for d in yaml.safe_load_all((Path(__file__).parent / "data/invalid-modeldeployments.yaml").read_text())
]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
FIELD = "test.modelplane.dev/field"


def test_there_are_at_least_fifteen_invalid_cases() -> None:
    assert len(INVALID) >= 15


@pytest.mark.parametrize("doc", INVALID, ids=[d["metadata"]["name"] for d in INVALID])
def test_pydantic_rejects_and_names_the_field(doc: dict[str, Any]) -> None:
    field = doc["metadata"]["annotations"][FIELD]
    with pytest.raises(ValidationError) as info:
        ModelDeployment.model_validate(doc)
    text = describe(info.value)
    # The error names the field: either as the path, or the path of the object that holds it plus the name.
    parent, _, leaf = field.rpartition(".")
    assert field in text or (parent in text and leaf.split("[")[0] in text), text


@pytest.mark.parametrize("doc", INVALID, ids=[d["metadata"]["name"] for d in INVALID])
def test_crd_rejects_and_names_the_field(doc: dict[str, Any]) -> None:
    field = doc["metadata"]["annotations"][FIELD]
    errors = crdcheck.errors(doc)
    assert errors, "the CRD would accept this manifest"
    assert any(field in error for error in errors), errors


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid_for_pydantic_and_the_crd(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        ModelDeployment.model_validate(doc)
        assert crdcheck.errors(doc) == []


def test_defaults_are_not_in_the_schema_and_replicas_stays_unset() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m"}})
    assert spec.replicas is None

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for value in node.values() for k in keys(value)}
        if isinstance(node, list):
            return {k for value in node for k in keys(value)}
        return set()

    assert "default" not in keys(crdcheck.root_schema())


def test_gpu_semantics() -> None:
    def gpu(**kw: Any) -> Any:
        return ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m"}, "gpu": kw}).gpu

    assert gpu().whole_gpus == 1  # a gpu block alone means one GPU
    assert gpu(count=0).uses_accelerator is False
    assert gpu(count=4).whole_gpus == 4
    assert gpu(mig="1g.10gb").whole_gpus == 0
    assert gpu(mig="1g.10gb").uses_accelerator
    assert gpu(mig="3g.40gb", count=1).mig == "3g.40gb"


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://claim",
        "pvc://claim/",
        "pvc://my.claim-1/a/b",
        "https://h/x",
        "http://h",
        "s3://b/k",
        "gs://b/k",
        "hf://org/repo",
        "file:///models/x",
    ],
)
def test_accepted_uris(uri: str) -> None:
    ModelDeploymentSpec.model_validate({"model": {"uri": uri}})
    schema = crdcheck.root_schema()["properties"]["spec"]["properties"]["model"]["properties"]["uri"]
    assert all(crdcheck.evaluate(rule["rule"], uri) for rule in schema["x-kubernetes-validations"])


@pytest.mark.parametrize(
    "uri", ["ftp://h/x", "s3:/b", "pvc://", "pvc://UPPER/x", "pvc://-claim/x", "models/x"]
)
def test_rejected_uris_agree(uri: str) -> None:
    with pytest.raises(ValidationError, match="uri"):
        ModelDeploymentSpec.model_validate({"model": {"uri": uri}})
    schema = crdcheck.root_schema()["properties"]["spec"]["properties"]["model"]["properties"]["uri"]
    assert not all(crdcheck.evaluate(rule["rule"], uri) for rule in schema["x-kubernetes-validations"])


def test_pvc_claim_and_path() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "pvc://store/a/b/"}})
    assert spec.model.pvc_claim_and_path() == ("store", "a/b")
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "pvc://store"}})
    assert spec.model.pvc_claim_and_path() == ("store", "")


def _key_rules(field: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = crdcheck.root_schema()["properties"]["spec"]["properties"][field][
        "x-kubernetes-validations"
    ]
    return rules


@pytest.mark.parametrize(
    "key",
    [
        "team",
        "a",
        "nvidia.com/gpu.product",
        "kubernetes.io/hostname",
        "app.kubernetes.io/part-of",
        "Team_Name.v2",
        "x" * 63,
        "example.com/" + "y" * 63,
        ("a" * 63 + ".") * 3 + "b" * 61 + "/name",  # a 253-character prefix
    ],
)
@pytest.mark.parametrize("field", ["nodeSelector", "podLabels", "podAnnotations"])
def test_accepted_label_and_annotation_keys(field: str, key: str) -> None:
    ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m"}, field: {key: "v"}})
    assert all(crdcheck.evaluate(rule["rule"], {key: "v"}) for rule in _key_rules(field))


@pytest.mark.parametrize(
    "key",
    [
        "team name",
        "-team",
        "team-",
        "x" * 64,
        "Example.com/team",
        "example.com/",
        "/team",
        "a/b/c",
        "exa_mple.com/team",
        ("a" * 63 + ".") * 3 + "b" * 62 + "/name",  # a 254-character prefix
    ],
)
@pytest.mark.parametrize("field", ["nodeSelector", "podLabels", "podAnnotations"])
def test_rejected_label_and_annotation_keys_agree_and_are_named(field: str, key: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m"}, field: {key: "v"}})
    assert field in describe(info.value)
    rule = _key_rules(field)[0]
    assert not crdcheck.evaluate(rule["rule"], {"ok": "v", key: "v"})
    message = crdcheck.message(rule, {"ok": "v", key: "v"})
    assert f'spec.{field} key "{key}" is not a qualified name' in message
