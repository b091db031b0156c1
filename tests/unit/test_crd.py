"""The generated CRD: structural, documented, bounded for CEL, and identical to crds/."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelplane.api.crd import SchemaError, build_crd, structural
from modelplane.commands import crd as crd_command

from tests.unit import crdcheck

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "modeldeployments.modelplane.dev.yaml"


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, child in (schema.get("properties") or {}).items():
        out += _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _nodes(schema["additionalProperties"], f"{path}.*")
    return out


def spec_and_status() -> list[tuple[str, dict[str, Any]]]:
    root = crdcheck.root_schema()
    return _nodes(root["properties"]["spec"], ".spec") + _nodes(root["properties"]["status"], ".status")


def all_nodes() -> list[tuple[str, dict[str, Any]]]:
    return _nodes(crdcheck.root_schema())


def test_the_name_rule_sits_on_metadata_name_so_errors_name_the_field() -> None:
    """A rule on the root object is reported with the field <nil>; on metadata.name, as metadata.name."""
    root = crdcheck.root_schema()
    assert "x-kubernetes-validations" not in root
    name = root["properties"]["metadata"]["properties"]["name"]
    (rule,) = name["x-kubernetes-validations"]
    assert crdcheck.evaluate(rule["rule"], "resnet-50")
    for bad in ("Bad_Name", "1starts-with-digit", "ends-with-", "a" * 64, "dotted.name"):
        assert not crdcheck.evaluate(rule["rule"], bad), bad
    assert crdcheck.evaluate(rule["rule"], "a" * 63)
    assert set(root["properties"]["metadata"]["properties"]) == {"name"}  # all a CRD may restrict


def test_crds_folder_matches_modelplane_crd() -> None:
    assert CRD_FILE.read_text() == crd_command.crd_yaml(), "crds/ is stale: run `make generate`"


def test_modelplane_crd_prints_the_crd() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert crd_command.main([]) == 0
    assert yaml.safe_load(out.getvalue()) == build_crd()


def test_names_scope_and_subresources() -> None:
    crd = build_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "modeldeployments.modelplane.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["mdep"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Replicas", "GPU", "Model", "Reason", "Age"]


def test_every_field_is_documented() -> None:
    # Scalar list items and map values are described by their list or map.
    missing = [
        path
        for path, node in spec_and_status()
        if not node.get("description") and not (path.endswith(("[]", ".*")) and node.get("type") != "object")
    ]
    assert missing == []


def test_gpu_fields_explained() -> None:
    gpu = crdcheck.root_schema()["properties"]["spec"]["properties"]["gpu"]
    assert set(gpu["properties"]) == {"count", "product", "minMemoryGB", "mig"}
    assert "81559" in gpu["properties"]["minMemoryGB"]["description"]


def test_strings_lists_and_maps_are_bounded_for_cel_cost() -> None:
    unbounded = []
    for path, node in spec_and_status():
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


def test_schema_is_structural() -> None:
    forbidden = {
        "$ref",
        "$defs",
        "title",
        "default",
        "additionalProperties",
        "propertyNames",
        "const",
        "allOf",
    }
    for path, node in spec_and_status():
        keys = set(node)
        if "properties" in node:
            assert "additionalProperties" not in node, path
        assert not (keys & (forbidden - {"additionalProperties"})), (path, keys & forbidden)
        if "anyOf" in node:  # only the int-or-string form
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "type" in node, path


def test_status_is_fully_defined_with_a_condition_list_map() -> None:
    status = crdcheck.root_schema()["properties"]["status"]
    assert not status.get("x-kubernetes-preserve-unknown-fields")
    assert {"observedGeneration", "replicas", "readyReplicas", "selector", "endpoints", "conditions"} <= set(
        status["properties"]
    )
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


def test_cel_rules_compile_and_name_fields() -> None:
    for _path, node in all_nodes():
        for rule in node.get("x-kubernetes-validations", []):
            crdcheck._program(rule["rule"])  # compiles
            assert "spec." in rule["message"] or "metadata.name" in rule["message"], rule


def test_cel_regexes_are_raw_strings() -> None:
    # CEL string literals reject "\." (invalid escape); the API server refuses the whole CRD then.
    # cel-python is lenient here, so check the literals themselves.
    for _path, node in all_nodes():
        for rule in node.get("x-kubernetes-validations", []):
            assert not re.findall(r"(?<![r\w])'[^']*\\[^']*'", rule["rule"]), rule["rule"]


def test_preserve_unknown_only_for_affinity() -> None:
    free = [path for path, node in spec_and_status() if node.get("x-kubernetes-preserve-unknown-fields")]
    assert free == [".spec.affinity"]


def test_converter_refuses_what_it_cannot_express() -> None:
    with pytest.raises(SchemaError):
        structural(
            {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "boolean"}]}}}
        )
    with pytest.raises(SchemaError):
        structural({"type": "object", "properties": {"x": {"type": "number", "exclusiveMinimum": 0}}})


def test_converter_inlines_refs_and_drops_nulls() -> None:
    schema = {
        "$defs": {"Inner": {"type": "object", "title": "Inner", "description": "inner", "properties": {}}},
        "type": "object",
        "properties": {
            "x": {
                "anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}],
                "default": None,
                "description": "outer",
            }
        },
    }
    assert structural(schema)["properties"]["x"] == {
        "type": "object",
        "description": "outer",
        "properties": {},
    }
