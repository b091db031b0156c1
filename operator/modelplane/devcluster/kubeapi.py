"""A minimal HTTPS client for the devcluster's own setup (nodes, RBAC, readiness).

The devcluster is a dev tool outside the operator's layers; it needs a handful of requests, so it
uses the standard library rather than the operator's API client, and does not depend on kubectl.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIELD_MANAGER = "modelplane-devcluster"

# Only the cluster-scoped kinds the devcluster creates.
_RESOURCES = {
    ("v1", "Node"): "/api/v1/nodes",
    ("v1", "Namespace"): "/api/v1/namespaces",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
    ): "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
}


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]}")
        self.status = status


@dataclass(frozen=True)
class Api:
    server: str
    ca: Path
    cert: Path
    key: Path

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self._context(), timeout=timeout) as response:
                payload = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiError(method, path, error.code, error.read().decode(errors="replace")) from error
        return json.loads(payload) if payload.strip().startswith(("{", "[")) else payload

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def apply(self, obj: dict[str, Any]) -> Any:
        """Server-side apply of a cluster-scoped object we own."""
        key = (obj["apiVersion"], obj["kind"])
        if key not in _RESOURCES:
            raise ValueError(f"the devcluster cannot apply {key[1]} ({key[0]})")
        path = f"{_RESOURCES[key]}/{obj['metadata']['name']}?fieldManager={FIELD_MANAGER}&force=true"
        return self.request("PATCH", path, obj, "application/apply-patch+yaml")

    def create_node(self, node: dict[str, Any]) -> None:
        """Create a Node with its status (capacity, allocatable), or leave an existing one be.

        Node status is kept on create, not on update, so status goes in with the POST and again through
        the status subresource, which makes it right even if the Node already existed.
        """
        try:
            self.request("POST", f"/api/v1/nodes?fieldManager={FIELD_MANAGER}", node)
        except ApiError as error:
            if error.status != 409:
                raise
        status = {"status": {k: node["status"][k] for k in ("capacity", "allocatable", "addresses")}}
        self.request(
            "PATCH",
            f"/api/v1/nodes/{node['metadata']['name']}/status",
            status,
            "application/merge-patch+json",
        )
