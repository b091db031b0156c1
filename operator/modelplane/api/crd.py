"""The ModelDeployment CustomResourceDefinition, generated from the pydantic models.

pydantic writes JSON Schema (draft 2020-12); the API server wants a *structural* OpenAPI v3 schema.
`structural()` converts one into the other and refuses anything it does not understand, so a new
field type cannot slip into the CRD half-converted:

- `$ref`s are inlined (structural schemas have no references);
- `anyOf [X, null]` becomes X: absent and null mean the same here, and the API server prunes nulls
  of non-nullable fields before validation;
- `anyOf [integer, string]` with `x-kubernetes-int-or-string` becomes the int-or-string form;
- `title`, `default` and `propertyNames` are dropped (defaults live in the renderer, see models.py);
- `additionalProperties: true` (a free-form object) becomes `x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

from typing import Any

from modelplane.api.models import (
    API_VERSION,
    DNS1035_RE,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    cel,
)

CRD_NAME = f"{PLURAL}.{GROUP}"

# Keywords copied as they are. Anything else in a pydantic schema is an error (see _convert).
_PASSTHROUGH = {
    "type",
    "description",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "format",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
}
_DROPPED = {"title", "default", "propertyNames"}


class SchemaError(ValueError):
    """The pydantic schema uses something the converter cannot express structurally."""


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert a pydantic JSON schema (with its `$defs`) into a structural OpenAPI v3 schema."""
    defs = schema.get("$defs", {})
    return _convert({k: v for k, v in schema.items() if k != "$defs"}, defs, path="")


def _resolve(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Inline a `$ref` and flatten `anyOf [X, null]`, keeping the outer keywords (they win)."""
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name not in defs:
            raise SchemaError(f"{path}: unknown $ref {name}")
        target = _resolve(defs[name], defs, path)
        node = {**target, **node}
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            inner = _resolve(branches[0], defs, path)
            node = {**inner, **rest}
        elif _is_int_or_string(branches):
            string = next(b for b in branches if b.get("type") == "string")
            node = {
                **rest,
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                **{k: string[k] for k in ("pattern", "maxLength") if k in string},
            }
        else:
            raise SchemaError(f"{path}: a union of {branches} has no structural form")
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node.pop("allOf")[0], defs, path)
        node = {**inner, **node}
    return node


def _is_int_or_string(branches: list[dict[str, Any]]) -> bool:
    return sorted(b.get("type", "") for b in branches) == ["integer", "string"]


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = _resolve(node, defs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
            out.setdefault("type", "string")
        elif key == "properties":
            out["properties"] = {
                name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            out["items"] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is False:
                continue  # structural schemas prune unknown fields instead
            else:
                out["additionalProperties"] = _convert(value, defs, f"{path}.*")
        elif key == "anyOf" and node.get("x-kubernetes-int-or-string"):
            out["anyOf"] = value
        elif key in _PASSTHROUGH:
            out[key] = value
        else:
            raise SchemaError(f"{path or '.'}: JSON schema keyword {key!r} has no structural conversion")
    if "x-kubernetes-preserve-unknown-fields" in out and "type" not in out:
        out["type"] = "object"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def spec_schema() -> dict[str, Any]:
    return structural(ModelDeploymentSpec.model_json_schema(by_alias=True, mode="validation"))


def status_schema() -> dict[str, Any]:
    return structural(ModelDeploymentStatus.model_json_schema(by_alias=True, mode="validation"))


def _ready(field: str) -> str:
    return f'.status.conditions[?(@.type=="Ready")].{field}'


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition, as `modelplane crd` prints it and crds/ holds it."""
    root: dict[str, Any] = {
        "type": "object",
        "description": "A model served on Kubernetes: one short resource that becomes a GPU-scheduled "
        "Deployment, a Service, a PodDisruptionBudget and optionally a HorizontalPodAutoscaler, with a "
        "status that says why when it cannot serve.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "modelplane.dev/v1alpha1"},
            "kind": {"type": "string", "description": "ModelDeployment"},
            # The name rule sits on metadata.name itself (the one part of metadata a CRD schema may
            # restrict), so the API server's error names the field: on the root object it would
            # report the field as <nil>, and a root rule's fieldPath may only name fields the
            # schema declares. No maxLength: the rule's one message covers the length too.
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "x-kubernetes-validations": [
                            cel(
                                f"size(self) <= 63 && self.matches(r'{DNS1035_RE}')",
                                "metadata.name must be a DNS-1035 label (at most 63 lowercase letters, "
                                "digits and '-', starting with a letter and ending with a letter or digit): "
                                "it also names the model's Service",
                            )
                        ],
                    }
                },
            },
            "spec": spec_schema(),
            "status": status_schema(),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "modelplane", "app.kubernetes.io/part-of": "modelplane"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "modelplane"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "string", "jsonPath": _ready("status")},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {"name": "GPU", "type": "string", "jsonPath": ".status.gpu"},
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.uri"},
                        {"name": "Reason", "type": "string", "jsonPath": _ready("reason")},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {
                            "name": "Available",
                            "type": "integer",
                            "jsonPath": ".status.readyReplicas",
                            "priority": 1,
                        },
                        {"name": "Message", "type": "string", "jsonPath": _ready("message"), "priority": 1},
                    ],
                }
            ],
        },
    }


__all__ = [
    "API_VERSION",
    "CRD_NAME",
    "SchemaError",
    "build_crd",
    "spec_schema",
    "status_schema",
    "structural",
]
