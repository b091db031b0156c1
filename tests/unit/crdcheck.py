"""Check a ModelDeployment against the generated CRD the way the API server does, without one.

The structural schema is applied with jsonschema (types, ranges, patterns, enums, required fields),
unknown fields are rejected (kubectl's default strict field validation), and every
`x-kubernetes-validations` rule is evaluated with cel-python where its field is present. Each error
starts with the field's path, as the API server's do.
"""

from __future__ import annotations

from typing import Any

import celpy
import jsonschema
from modelplane.api.crd import build_crd

_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def root_schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    return _PROGRAMS[rule]


def evaluate(rule: str, value: Any) -> bool:
    return bool(_program(rule).evaluate({"self": celpy.json_to_cel(value)}))


def message(check: dict[str, Any], value: Any) -> str:
    """The message the API server reports for a failed rule: its messageExpression's, if it has one."""
    if "messageExpression" in check:
        return str(_program(check["messageExpression"]).evaluate({"self": celpy.json_to_cel(value)}))
    return str(check["message"])


def _walk(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> None:
    for check in schema.get("x-kubernetes-validations", []):
        if not evaluate(check["rule"], value):
            where = path + check.get("fieldPath", "")
            errors.append(f"{where or '<root>'}: {message(check, value)}")
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is not None:
            for key, child in value.items():
                if key in properties:
                    _walk(properties[key], child, f"{path}.{key}".lstrip("."), errors)
                elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != "metadata":
                    errors.append(f'{f"{path}.{key}".lstrip(".")}: unknown field "{key}"')
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, child in value.items():
                _walk(schema["additionalProperties"], child, f"{path}.{key}", errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            _walk(schema["items"], child, f"{path}[{index}]", errors)


def errors(manifest: dict[str, Any]) -> list[str]:
    """Every reason the API server would reject the manifest (empty: it would be accepted)."""
    schema = root_schema()
    found = []
    for error in jsonschema.Draft7Validator(schema).iter_errors(manifest):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        if error.validator == "required":  # the API server names the missing field itself
            missing = str(error.message).split("'")[1]
            path = f"{path}.{missing}".lstrip(".")
        found.append(f"{path or '<root>'}: {error.message}")
    if not found:  # CEL runs only on values that passed the schema
        _walk(schema, manifest, "", found)
    return found
