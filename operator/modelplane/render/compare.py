"""Desired versus observed, without the API server: decides whether a child needs an apply at all.

An unchanged server-side apply is still a write request, so the operator applies only when this says
so. Two checks, each covering what the other cannot:

- the desired-state hash (an annotation on the child) changes when *our intent* changes, including a
  field we stopped setting, which a subset check cannot see;
- the semantic subset check sees *someone else's* change to a field we set (replicas scaled by hand,
  image edited), while tolerating what the API server adds (defaults, status, other managers' fields)
  and how it rewrites values (quantities "1000m" vs "1", zero values dropped by omitempty).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

HASH_ANNOTATION = "modelplane.dev/desired-hash"

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Keys whose values are Kubernetes quantities (their parents for requests/limits).
_QUANTITY_PARENTS = {"requests", "limits"}
_QUANTITY_KEYS = {"sizeLimit", "averageValue"}


def parse_quantity(value: int | float | str) -> Decimal | None:
    """A Kubernetes quantity as an exact number, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation:
        return None
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    return base * Decimal(10) ** int(suffix[1:])  # an exponent such as e3


def desired_hash(manifest: Mapping[str, Any]) -> str:
    """A short, stable hash of a manifest, ignoring the hash annotation itself."""
    annotations = dict(manifest.get("metadata", {}).get("annotations") or {})
    annotations.pop(HASH_ANNOTATION, None)
    metadata = {**manifest.get("metadata", {}), "annotations": annotations}
    text = json.dumps({**manifest, "metadata": metadata}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_desired_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    metadata = dict(manifest.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), HASH_ANNOTATION: desired_hash(manifest)}
    return {**manifest, "metadata": metadata}


def _is_zero(value: Any) -> bool:
    """Values the API server drops when serialising (Go's omitempty): absent means the same."""
    if value is None or value is False:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value == 0
    return value in ("", [], {})


def differences(desired: Any, observed: Any, path: str = "") -> list[str]:
    """Paths where `observed` does not carry what `desired` asks for (empty: nothing to do)."""
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return [] if not desired and observed is None else [path or "."]
        found: list[str] = []
        for key, want in desired.items():
            sub = f"{path}.{key}"
            if key not in observed:
                if not _is_zero(want):
                    found.append(sub)
                continue
            got = observed[key]
            if _quantity_field(path, key) and _same_quantity(want, got):
                continue
            found += differences(want, got, sub)
        return found
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return [] if not desired and observed is None else [path]
        keyed = _keyed(desired)
        if keyed is not None:
            by_key = {_item_key(item, keyed): item for item in observed if isinstance(item, Mapping)}
            found = []
            for item in desired:
                key = _item_key(item, keyed)
                if key not in by_key:
                    found.append(f"{path}[{key}]")
                else:
                    found += differences(item, by_key[key], f"{path}[{key}]")
            return found
        if len(desired) != len(observed):
            return [path]
        found = []
        for index, (want, got) in enumerate(zip(desired, observed, strict=True)):
            found += differences(want, got, f"{path}[{index}]")
        return found
    if desired == observed:
        return []
    return [path or "."]


def _quantity_field(path: str, key: str) -> bool:
    parent = path.rsplit(".", 1)[-1]
    return parent in _QUANTITY_PARENTS or key in _QUANTITY_KEYS


def _same_quantity(want: Any, got: Any) -> bool:
    if isinstance(want, dict | list) or isinstance(got, dict | list):
        return False
    a, b = parse_quantity(want), parse_quantity(got)
    return a is not None and a == b


def _keyed(items: list[Any]) -> str | None:
    """The merge key of a list of objects ("name", or "uid" for owner references), if every item has one."""
    for key in ("name", "uid"):
        if items and all(isinstance(i, Mapping) and key in i for i in items):
            values = [i[key] for i in items]
            if len(set(values)) == len(values):
                return key
    return None


def _item_key(item: Mapping[str, Any], key: str) -> str:
    return str(item.get(key))


def needs_apply(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> list[str]:
    """Why a child must be applied: [] when the observed object already is what we want."""
    if observed is None:
        return ["absent"]
    want = desired.get("metadata", {}).get("annotations", {}).get(HASH_ANNOTATION)
    have = (observed.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if want != have:
        return ["desired state changed"]
    return differences(desired, observed)


def owns_field(body: Mapping[str, Any], manager: str, path: tuple[str, ...]) -> bool:
    """Whether `manager` owns the field at `path` through server-side apply (from managedFields)."""
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        node: Any = entry.get("fieldsV1") or {}
        for part in path:
            node = node.get(f"f:{part}") if isinstance(node, Mapping) else None
        if node is not None:
            return True
    return False
