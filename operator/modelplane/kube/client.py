"""The only code that writes to the Kubernetes API: server-side apply, deletes, status, events.

Reads come from Kopf's watch streams (the reconcile layer's caches), so an idle operator sends no
requests from here at all: every method below is a write, and each one is counted. The one read is
`watch_peering`, the Kopf peering object a replica watches to know whether it is the active one.
"""

from __future__ import annotations

import datetime
import os
import secrets
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from modelplane.api.models import GROUP, KIND, PLURAL, VERSION

FIELD_MANAGER = "modelplane"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# How the API server words a server-side apply that does not fit the schema (HTTP 500).
TYPED_PATCH_ERROR = "failed to create typed patch object"

# Generic (raw dict) resource classes: what we send is exactly what render produced, and what comes
# back is the API server's JSON, not a model that might drop fields it does not know.
_RESOURCES: dict[tuple[str, str], Any] = {
    ("apps/v1", "Deployment"): create_namespaced_resource("apps", "v1", "Deployment", "deployments"),
    ("v1", "Service"): create_namespaced_resource("", "v1", "Service", "services"),
    ("policy/v1", "PodDisruptionBudget"): create_namespaced_resource(
        "policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"
    ),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): create_namespaced_resource(
        "autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"
    ),
    ("v1", "Event"): create_namespaced_resource("", "v1", "Event", "events"),
}
ModelDeploymentResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
# Kopf's peering objects (kopf.dev/v1): one cluster-wide, or one per served namespace.
ClusterKopfPeering = create_global_resource("kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings")
KopfPeering = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")


class KubeError(Exception):
    """An API request failed. `code` is the HTTP status (0: no response)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def permanent(self) -> bool:
        """Only a change of the request can fix it (invalid, or refused by admission).

        A server-side apply whose body does not fit the object's schema (a string where the schema
        has a map, say in a passed-through affinity) is answered 500 "failed to create typed patch
        object": retrying the same body can never succeed, so it counts as invalid too.
        """
        if self.code == 500:
            return self.message.startswith(TYPED_PATCH_ERROR)
        return self.code in (400, 422)


def use_kubeconfig() -> bool:
    """KUBECONFIG when set, else the in-cluster service account, else ~/.kube/config."""
    if os.environ.get("KUBECONFIG"):
        return True
    return not os.path.exists(os.path.join(SERVICE_ACCOUNT_DIR, "token"))


def _config() -> KubeConfig:
    if os.environ.get("KUBECONFIG"):
        first = os.environ["KUBECONFIG"].split(os.pathsep)[0]
        return KubeConfig.from_file(first)
    return KubeConfig.from_env()


def _resource(api_version: str, kind: str) -> Any:
    try:
        return _RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None


def _error(exc: Exception) -> KubeError:
    if isinstance(exc, ApiError):
        return KubeError(int(exc.status.code or 0), str(exc.status.message or exc))
    return KubeError(0, f"{type(exc).__name__}: {exc}")


def utc_now() -> str:
    """Now, in UTC, as the RFC 3339 seconds Kubernetes writes."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Kube:
    """Writes, each reported to `on_write(verb, kind)` (the operator counts them as metrics)."""

    client: AsyncClient
    field_manager: str = FIELD_MANAGER
    component: str = "modelplane-operator"
    on_write: Callable[[str, str], None] = field(default=lambda verb, kind: None)

    async def apply(self, manifest: dict[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        """Server-side apply with our field manager, forcing our fields back (drift repair)."""
        resource = _resource(manifest["apiVersion"], manifest["kind"])
        metadata = manifest["metadata"]
        self.on_write("apply", manifest["kind"])
        try:
            result = await self.client.patch(
                resource,
                metadata["name"],
                manifest,
                namespace=metadata["namespace"],
                patch_type=PatchType.APPLY,
                field_manager=field_manager or self.field_manager,
                force=True,
            )
        except (ApiError, httpx2.HTTPError) as exc:
            raise _error(exc) from exc
        body: dict[str, Any] = result.to_dict()
        return body

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete a child we no longer want; one already gone is fine."""
        self.on_write("delete", kind)
        try:
            await self.client.delete(_resource(api_version, kind), name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise _error(exc) from exc
        except httpx2.HTTPError as exc:
            raise _error(exc) from exc

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of a ModelDeployment's status subresource."""
        self.on_write("patch", f"{KIND}/status")
        try:
            result = await self.client.patch(
                ModelDeploymentResource.Status,
                name,
                patch,
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=self.field_manager,
            )
        except (ApiError, httpx2.HTTPError) as exc:
            raise _error(exc) from exc
        body: dict[str, Any] = result.to_dict()
        return body

    async def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about a ModelDeployment (shown by `kubectl describe mdep`)."""
        metadata = owner.get("metadata") or {}
        now = utc_now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{metadata.get('name')}.{secrets.token_hex(8)}",
                "namespace": metadata.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": owner.get("apiVersion"),
                "kind": owner.get("kind"),
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": os.environ.get("POD_NAME")
            or os.environ.get("HOSTNAME", "modelplane-operator"),
        }
        self.on_write("create", "Event")
        event: Any = _resource("v1", "Event").from_dict(body)
        try:
            await self.client.create(event)
        except (ApiError, httpx2.HTTPError) as exc:
            raise _error(exc) from exc

    async def watch_peering(
        self, name: str, namespace: str | None, *, server_timeout: int = 60
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """The status of one Kopf peering object, now and after every change (None: it does not exist).

        A ClusterKopfPeering without a namespace, else the KopfPeering in it. The first item comes at
        once, from a list; the rest from a watch that the server ends every `server_timeout` seconds
        and that resumes where it ended. Errors end the iteration as a KubeError: the caller decides
        when to look again (and, meanwhile, how long what it knows stays true).
        """
        resource: Any = ClusterKopfPeering if namespace is None else KopfPeering
        where: dict[str, Any] = {"fields": {"metadata.name": name}}
        if namespace is not None:
            where["namespace"] = namespace
        try:
            listing = self.client.list(resource, **where)
            found: dict[str, Any] | None = None
            async for item in listing:
                found = item.to_dict()
            yield None if found is None else dict(found.get("status") or {})
            stream = self.client.watch(
                resource, server_timeout=server_timeout, resource_version=listing.resourceVersion, **where
            )
            async for event_type, obj in stream:
                yield None if event_type == "DELETED" else dict(obj.to_dict().get("status") or {})
        except (ApiError, httpx2.HTTPError) as exc:
            raise _error(exc) from exc

    async def close(self) -> None:
        await self.client.close()


def connect(*, timeout_seconds: float = 30.0, on_write: Callable[[str, str], None] | None = None) -> Kube:
    """A client for KUBECONFIG or the in-cluster service account (the same choice Kopf's login makes)."""
    client = AsyncClient(
        config=_config(),
        timeout=httpx2.Timeout(timeout_seconds, connect=10.0),
        field_manager=FIELD_MANAGER,
        trust_env=False,
    )
    kube = Kube(client=client)
    if on_write is not None:
        kube.on_write = on_write
    return kube
