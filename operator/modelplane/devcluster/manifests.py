"""Objects the devcluster creates besides the nodes: the audit policy and the operator's RBAC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

OPERATOR_USER = "modelplane-operator"
OPERATOR_ROLE = "modelplane-operator"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


class RulesError(ValueError):
    """The operator's RBAC rules file is not a list of PolicyRules."""


def audit_policy() -> dict[str, Any]:
    """Record every write (with its user), and the reads of the operator and of ServiceAccounts (the
    chart's operator identity, whose tokens the audit log tells apart); drop other reads and probes.

    Metadata level is enough to tell who did what to which object, and keeps the log small.
    """
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {
                "level": "None",
                "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version", "/metrics"],
            },
            {"level": "Metadata", "verbs": list(WRITE_VERBS)},
            {"level": "Metadata", "users": [OPERATOR_USER]},
            {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
            {"level": "None"},
        ],
    }


def load_rules(path: Path) -> list[dict[str, Any]]:
    """The operator's PolicyRules, checked enough to give a clear error naming the file."""
    if not path.is_file():
        raise RulesError(f"the operator's RBAC rules file {path} does not exist")
    rules = yaml.safe_load(path.read_text())
    if not isinstance(rules, list) or not rules:
        raise RulesError(f"{path}: expected a non-empty YAML list of RBAC rules, got {type(rules).__name__}")
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict) or not rule.get("verbs"):
            raise RulesError(f"{path}: rule {index} has no verbs: {rule!r}")
        if "resources" not in rule and "nonResourceURLs" not in rule:
            raise RulesError(f"{path}: rule {index} names neither resources nor nonResourceURLs: {rule!r}")
    return rules


def operator_rbac(
    rules: list[dict[str, Any]], subject: dict[str, str], name: str = OPERATOR_ROLE
) -> list[dict[str, Any]]:
    """A ClusterRole with the rules and a ClusterRoleBinding to one subject (a User or ServiceAccount)."""
    labels = {"app.kubernetes.io/name": "modelplane", "app.kubernetes.io/component": "operator"}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [subject],
        },
    ]


def user_subject(user: str = OPERATOR_USER) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}


def service_account_subject(name: str, namespace: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}
