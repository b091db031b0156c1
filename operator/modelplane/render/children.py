"""Pure builders: a ModelDeployment's spec -> the manifests of its children (no I/O).

Each `build_*` function returns one plain dict, ready for server-side apply. `build_children` is what
the operator applies and `modelplane render` prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelplane import __version__
from modelplane.api.models import (
    API_VERSION,
    GRPC_PORT,
    HTTP_PORT,
    KIND,
    MANAGED_BY_LABEL,
    METRICS_PORT,
    MODEL_REPOSITORY,
    SELECTOR_LABEL,
    ModelDeploymentSpec,
    ResourceList,
)
from modelplane.render.compare import with_desired_hash

Manifest = dict[str, Any]

DEFAULT_RUNTIME_IMAGE = f"ghcr.io/modelplane/runtime:{__version__}"
DEFAULT_MAX_LOAD_SECONDS = 600
# Added to the load budget for the Deployment's progress deadline: scheduling, image pull and fetch.
PROGRESS_MARGIN_SECONDS = 120
STARTUP_PERIOD_SECONDS = 5
DEFAULT_CPU_TARGET = 80
QUEUE_METRIC = "nv_inference_pending_request_count"

SERVER_CONTAINER = "model-server"
FETCH_CONTAINER = "model-fetch"
AUTH_DIR = "/var/run/secrets/modelplane/auth"
AUTH_TOKEN_FILE = f"{AUTH_DIR}/token"
RUN_AS = 1000

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"

# Used when spec.resources is absent: enough for the runtime, torch and a small model.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "1", "memory": "4Gi"},
    "limits": {"memory": "8Gi"},
}


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns the children (for owner references and the namespace)."""

    name: str
    namespace: str
    uid: str | None = None

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class RenderOptions:
    """What the operator decides rather than the user: today only the default runtime image."""

    default_image: str = DEFAULT_RUNTIME_IMAGE


# -- labels and small helpers -------------------------------------------------------------------


def selector_labels(name: str) -> dict[str, str]:
    """The one label that selects a ModelDeployment's pods. It never changes (selectors are immutable)."""
    return {SELECTOR_LABEL: name}


def common_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelplane-model",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "modelplane",
        MANAGED_BY_LABEL: "modelplane",
        **selector_labels(name),
    }


def selector_string(name: str) -> str:
    """The selector as the scale subresource wants it (status.selector)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def _metadata(owner: Owner, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": owner.name, "namespace": owner.namespace, "labels": dict(labels)}
    if owner.uid:
        meta["ownerReferences"] = [owner.reference()]
    return meta


def model_name(spec: ModelDeploymentSpec, owner: Owner) -> str:
    return spec.model.name or owner.name


def model_version(spec: ModelDeploymentSpec) -> str:
    return spec.model.version or "1"


def max_load_seconds(spec: ModelDeploymentSpec) -> int:
    if spec.startup is not None and spec.startup.max_load_seconds is not None:
        return spec.startup.max_load_seconds
    return DEFAULT_MAX_LOAD_SECONDS


def progress_deadline_seconds(spec: ModelDeploymentSpec) -> int:
    """The Deployment's progress deadline: the load budget plus scheduling, pull and fetch time."""
    return max_load_seconds(spec) + PROGRESS_MARGIN_SECONDS


def replicas(spec: ModelDeploymentSpec) -> int | None:
    """Deployment replicas, or None when an HPA owns them (the field is then left out of the apply)."""
    if spec.autoscaling is not None:
        return None
    return 1 if spec.replicas is None else spec.replicas


def min_replicas(spec: ModelDeploymentSpec) -> int:
    """The fewest replicas the workload runs with: decides whether a PDB makes sense."""
    if spec.autoscaling is not None:
        return spec.autoscaling.min_replicas or 1
    return 1 if spec.replicas is None else spec.replicas


def mib_threshold(min_memory_gb: int) -> int:
    """The `Gt` value for nvidia.com/gpu.memory (MiB) that selects cards of at least N vendor GB.

    Vendor gigabytes are 10^9 bytes; the label is in MiB (2^20 bytes). `Gt t` admits memory >= t+1 MiB,
    so t = ceil(N * 10^9 / 2^20) - 1: 80 GB -> Gt 76293 (an H100 80GB reports 81559 MiB).
    """
    return math.ceil(min_memory_gb * 10**9 / 2**20) - 1


def gpu_summary(spec: ModelDeploymentSpec) -> str:
    """A short description of the accelerator, for status.gpu and the GPU printer column."""
    gpu = spec.gpu
    if gpu is None or not gpu.uses_accelerator:
        return "cpu"
    if gpu.mig is not None:
        return f"mig-{gpu.mig}"
    text = f"{gpu.whole_gpus}x " + ("|".join(gpu.product) if gpu.product else "gpu")
    if gpu.min_memory_gb is not None:
        text += f" >={gpu.min_memory_gb}GB"
    return text


def _quantities(resources: ResourceList | None) -> dict[str, Any]:
    if resources is None:
        return {}
    return resources.model_dump(by_alias=True, exclude_none=True)


def container_resources(spec: ModelDeploymentSpec, *, with_gpu: bool) -> dict[str, Any]:
    """Requests and limits of a container: the user's (or the defaults) plus the GPU or MIG device."""
    if spec.resources is None:
        requests: dict[str, Any] = dict(DEFAULT_RESOURCES["requests"])
        limits: dict[str, Any] = dict(DEFAULT_RESOURCES["limits"])
    else:
        requests = _quantities(spec.resources.requests)
        limits = _quantities(spec.resources.limits)
    if with_gpu and spec.gpu is not None:
        if spec.gpu.mig is not None:
            device = {f"nvidia.com/mig-{spec.gpu.mig}": "1"}
        elif spec.gpu.whole_gpus > 0:
            device = {GPU_RESOURCE: str(spec.gpu.whole_gpus)}
        else:
            device = {}
        # Extended resources cannot be overcommitted: requests must equal limits.
        requests.update(device)
        limits.update(device)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _security_context() -> dict[str, Any]:
    """The restricted Pod Security Standard, for every container."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# -- the pod ------------------------------------------------------------------------------------


def serve_args(spec: ModelDeploymentSpec, owner: Owner) -> list[str]:
    """`modelplane serve ...`: every setting as a flag (flags override a repository's config.pbtxt)."""
    args = [
        "serve",
        "--model-repository",
        MODEL_REPOSITORY,
        "--model-name",
        model_name(spec, owner),
        "--model-version",
        model_version(spec),
        "--http-port",
        str(HTTP_PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--metrics-port",
        str(METRICS_PORT),
    ]
    if spec.model.format is not None:
        args += ["--model-format", spec.model.format]
    runtime = spec.runtime
    if runtime is not None:
        if runtime.max_batch_size is not None:
            args += ["--max-batch-size", str(runtime.max_batch_size)]
        if runtime.max_queue_delay_microseconds is not None:
            args += ["--max-queue-delay-us", str(runtime.max_queue_delay_microseconds)]
        if runtime.precision is not None:
            args += ["--precision", runtime.precision]
        if runtime.auth_token_secret is not None:
            args += ["--auth-token-file", AUTH_TOKEN_FILE]
        args += list(runtime.args or [])
    return args


def fetch_args(spec: ModelDeploymentSpec, owner: Owner) -> list[str]:
    return [
        "fetch",
        spec.model.uri,
        MODEL_REPOSITORY,
        "--name",
        model_name(spec, owner),
        "--version",
        model_version(spec),
    ]


def _image(spec: ModelDeploymentSpec, options: RenderOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"image": options.default_image}
    if spec.runtime is not None:
        if spec.runtime.image is not None:
            out["image"] = spec.runtime.image
        if spec.runtime.image_pull_policy is not None:
            out["imagePullPolicy"] = spec.runtime.image_pull_policy
    return out


def _http_probe(path: str, *, period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def build_server_container(spec: ModelDeploymentSpec, owner: Owner, options: RenderOptions) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}]
    if spec.runtime is not None and spec.runtime.env:
        env += [e.model_dump(by_alias=True, exclude_none=True) for e in spec.runtime.env]
    mounts: list[dict[str, Any]] = [
        {"name": "model", "mountPath": MODEL_REPOSITORY, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.model.is_pvc:
        _, path = spec.model.pvc_claim_and_path()
        if path:
            mounts[0]["subPath"] = path
    if spec.runtime is not None and spec.runtime.auth_token_secret is not None:
        mounts.append({"name": "auth-token", "mountPath": AUTH_DIR, "readOnly": True})
    load_budget = max_load_seconds(spec)
    return {
        "name": SERVER_CONTAINER,
        **_image(spec, options),
        "args": serve_args(spec, owner),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": container_resources(spec, with_gpu=True),
        "volumeMounts": mounts,
        # Loading is bounded by the startup budget; liveness only starts once the model is ready, so a
        # slow load is never killed by it (kserve#3795).
        "startupProbe": _http_probe(
            "/v2/health/ready",
            period=STARTUP_PERIOD_SECONDS,
            failures=math.ceil(load_budget / STARTUP_PERIOD_SECONDS),
            timeout=3,
        ),
        "livenessProbe": _http_probe("/v2/health/live", period=10, failures=3, timeout=5),
        "readinessProbe": _http_probe("/v2/health/ready", period=5, failures=3, timeout=3),
        "securityContext": _security_context(),
        # A crash then shows its last log lines in the pod status, and so in the ModelDeployment's.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def build_fetch_container(spec: ModelDeploymentSpec, owner: Owner, options: RenderOptions) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        **_image(spec, options),
        "args": fetch_args(spec, owner),
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": container_resources(spec, with_gpu=False),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_REPOSITORY},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": _security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.model.credentials_secret is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.model.credentials_secret}}]
    return container


def build_volumes(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    if spec.model.is_pvc:
        claim, _ = spec.model.pvc_claim_and_path()
        model: dict[str, Any] = {
            "name": "model",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
    else:
        model = {"name": "model", "emptyDir": {}}
    volumes = [model, {"name": "tmp", "emptyDir": {}}]
    if spec.runtime is not None and spec.runtime.auth_token_secret is not None:
        volumes.append(
            {
                "name": "auth-token",
                "secret": {
                    "secretName": spec.runtime.auth_token_secret,
                    "items": [{"key": "token", "path": "token"}],
                    "defaultMode": 0o440,
                },
            }
        )
    return volumes


def build_tolerations(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations or []]
    if spec.gpu is not None and spec.gpu.uses_accelerator:
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
    return tolerations


def gpu_node_requirements(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """matchExpressions that every node must satisfy: GPU product and minimum GPU memory."""
    gpu = spec.gpu
    if gpu is None or not gpu.uses_accelerator:
        return []
    requirements: list[dict[str, Any]] = []
    if gpu.product:
        requirements.append({"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(gpu.product)})
    if gpu.min_memory_gb is not None:
        requirements.append(
            {"key": GPU_MEMORY_LABEL, "operator": "Gt", "values": [str(mib_threshold(gpu.min_memory_gb))]}
        )
    return requirements


def build_affinity(spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """The user's affinity, with the GPU requirements added to every required node selector term.

    Terms are ORed and expressions within a term ANDed, so adding ours to each term keeps the user's
    choice while making the GPU constraints hold whichever term matches.
    """
    affinity: dict[str, Any] = dict(spec.affinity or {})
    requirements = gpu_node_requirements(spec)
    if not requirements:
        return affinity or None
    node_affinity = dict(affinity.get("nodeAffinity") or {})
    required = dict(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = [dict(term) for term in required.get("nodeSelectorTerms") or []] or [{}]
    for term in terms:
        term["matchExpressions"] = list(term.get("matchExpressions") or []) + requirements
    required["nodeSelectorTerms"] = terms
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    affinity["nodeAffinity"] = node_affinity
    return affinity


def build_pod_template(spec: ModelDeploymentSpec, owner: Owner, options: RenderOptions) -> dict[str, Any]:
    labels = {**(spec.pod_labels or {}), **common_labels(owner.name)}
    annotations = {
        **(spec.pod_annotations or {}),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    pod: dict[str, Any] = {
        # The runtime never talks to the API server.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if not spec.model.is_pvc:
        pod["initContainers"] = [build_fetch_container(spec, owner, options)]
    pod["containers"] = [build_server_container(spec, owner, options)]
    pod["volumes"] = build_volumes(spec)
    if spec.service_account_name is not None:
        pod["serviceAccountName"] = spec.service_account_name
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    tolerations = build_tolerations(spec)
    if tolerations:
        pod["tolerations"] = tolerations
    affinity = build_affinity(spec)
    if affinity:
        pod["affinity"] = affinity
    if spec.priority_class_name is not None:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.runtime_class_name is not None:
        pod["runtimeClassName"] = spec.runtime_class_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [s.model_dump(by_alias=True) for s in spec.image_pull_secrets]
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod}


# -- the children -------------------------------------------------------------------------------


def build_deployment(spec: ModelDeploymentSpec, owner: Owner, options: RenderOptions) -> Manifest:
    deployment_spec: dict[str, Any] = {}
    count = replicas(spec)
    if count is not None:  # with autoscaling the HPA owns replicas: leave the field to it
        deployment_spec["replicas"] = count
    deployment_spec.update(
        {
            "progressDeadlineSeconds": progress_deadline_seconds(spec),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(owner.name)},
            "template": build_pod_template(spec, owner, options),
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, common_labels(owner.name)),
        "spec": deployment_spec,
    }


def build_service(spec: ModelDeploymentSpec, owner: Owner) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, common_labels(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [
                {
                    "name": "http",
                    "port": HTTP_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                # kubernetes.io/h2c: cleartext HTTP/2, the standard appProtocol for gRPC backends.
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
            ],
        },
    }


def build_pdb(spec: ModelDeploymentSpec, owner: Owner) -> Manifest | None:
    """At most one replica down at a time, when there is more than one; None otherwise."""
    if min_replicas(spec) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, common_labels(owner.name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(owner.name)},
            # A crash-looping replica must not block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_hpa(spec: ModelDeploymentSpec, owner: Owner) -> Manifest | None:
    autoscaling = spec.autoscaling
    if autoscaling is None:
        return None
    if autoscaling.target_queue_depth is not None:
        metric: dict[str, Any] = {
            "type": "Pods",
            "pods": {
                "metric": {"name": QUEUE_METRIC},
                "target": {"type": "AverageValue", "averageValue": str(autoscaling.target_queue_depth)},
            },
        }
    else:
        metric = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": autoscaling.target_cpu_utilization or DEFAULT_CPU_TARGET,
                },
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, common_labels(owner.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": min_replicas(spec),
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [metric],
        },
    }


# The kinds a ModelDeployment can own, in apply order.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
)


def build_children(
    spec: ModelDeploymentSpec, owner: Owner, options: RenderOptions | None = None
) -> list[Manifest]:
    """Every child the spec wants, in apply order, each stamped with its desired-state hash."""
    options = options or RenderOptions()
    children: list[Manifest | None] = [
        build_deployment(spec, owner, options),
        build_service(spec, owner),
        build_pdb(spec, owner),
        build_hpa(spec, owner),
    ]
    return [with_desired_hash(child) for child in children if child is not None]


def replicas_handover(spec: ModelDeploymentSpec, owner: Owner, current: int) -> Manifest:
    """The apply that hands Deployment.spec.replicas over when autoscaling is switched on.

    Dropping a field from a server-side apply deletes it if no other manager owns it: the Deployment
    would fall back to 1 replica until the HPA scales it up again. Applying the current count (within
    the autoscaling bounds) under a second field manager first keeps the field, now co-owned, so the
    main manager can let go of it without a dip (the Kubernetes docs' "transferring ownership").
    """
    assert spec.autoscaling is not None
    low, high = min_replicas(spec), spec.autoscaling.max_replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": owner.name, "namespace": owner.namespace},
        "spec": {"replicas": min(max(current, low), high)},
    }
