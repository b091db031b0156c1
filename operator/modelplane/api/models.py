"""The ModelDeployment API as pydantic models: the one source of the CRD schema and of validation.

Every rule lives twice on purpose, in one place: as a Python validator (so `modelplane render` and the
operator reject bad input with the same words) and as a CEL rule in the generated CRD (so the API
server rejects it at `kubectl apply`). `tests/unit/test_api_cel.py` evaluates each CEL rule against
the same cases as the Python validator, so the two cannot drift apart.

Defaults are applied by the renderer, never in the CRD schema: an operator upgrade can improve a
default without migrating stored objects, and `spec.replicas` must stay unset (not defaulted) so the
scale subresource and autoscaling can tell "absent" from "1".
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

GROUP = "modelplane.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]

# Where the model lives inside every model pod, and the runtime's fixed ports.
MODEL_REPOSITORY = "/mnt/models"
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002

URI_SCHEMES = ("pvc", "http", "https", "s3", "gs", "hf", "file")
URI_SCHEME_RE = r"^(pvc|https?|s3|gs|hf|file)://"
# pvc://<claim>[/<path>]: the claim is a DNS-1123 subdomain (a PersistentVolumeClaim name).
PVC_URI_RE = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(/.*)?$"
DNS1035_RE = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_RE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A label or annotation key: an optional DNS-subdomain prefix and "/", then a name of at most 63.
QUALIFIED_NAME_RE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
KEY_PREFIX_RE = r"^([^/]{1,253}/)?[^/]*$"  # the prefix's 253 characters at most
# A Kubernetes quantity without a sign ("500m", "2Gi", "1.5", "1e3").
QUANTITY_RE = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
MIG_PROFILE_RE = r"^[1-7]g\.[1-9][0-9]*gb(\+[a-z]+)?$"
MODEL_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_NAME_RE = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

# Labels the operator sets on pods itself; user podLabels may not replace them (the selector and the
# watch filter depend on them).
SELECTOR_LABEL = "modelplane.dev/model-deployment"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RESERVED_POD_LABELS = (SELECTOR_LABEL, MANAGED_BY_LABEL)


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry. `reason` is FieldValueInvalid unless given."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


class _Model(BaseModel):
    """Base: camelCase names on the wire, unknown fields rejected (typos fail loudly), immutable.

    Strict: "2" is not an integer here, exactly as the API server's schema validation sees it.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True
    )


# -- small reusable field types ------------------------------------------------------------------

Quantity = Annotated[
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=QUANTITY_RE, max_length=64)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
DnsSubdomain = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN_RE)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_RE)]
# Label and annotation keys. A CRD schema cannot constrain map keys, so the maps that use them carry
# the CEL rule of `qualified_keys`; pydantic checks the same here.
QUALIFIED_NAME_HELP = (
    "an optional DNS subdomain prefix (at most 253 characters) and a slash, then a name of at most 63 "
    "letters, digits, dashes, underscores and dots that begins and ends with a letter or digit "
    "(e.g. example.com/team)"
)


def _qualified_name(key: str) -> str:
    if not (re.match(QUALIFIED_NAME_RE, key) and re.match(KEY_PREFIX_RE, key)):
        raise ValueError(f"key {key!r} is not a qualified name: {QUALIFIED_NAME_HELP}")
    return key


LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=317), AfterValidator(_qualified_name)]


def qualified_keys(field: str) -> JsonDict:
    """The CEL rule that every key of the map at `field` is a qualified name; its message names the
    first bad key."""
    valid = f"k.matches('{QUALIFIED_NAME_RE}') && k.matches('{KEY_PREFIX_RE}')"
    entry = cel(f"self.all(k, {valid})", f"{field} keys must be qualified names: {QUALIFIED_NAME_HELP}")
    entry["messageExpression"] = (
        f"'{field} key \"' + self.filter(k, !({valid}))[0] + '\" is not a qualified name: "
        f"{QUALIFIED_NAME_HELP}'"
    )
    return entry


# -- spec.model ---------------------------------------------------------------------------------

ModelFormat = Literal["torch-export", "torchscript", "state-dict", "safetensors", "onnx"]


class ModelSource(_Model):
    """Which model to serve and where it comes from."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        description=(
            "Where the model is. pvc://<claim>/<path> mounts that PersistentVolumeClaim read-only "
            "(no copy); http://, https://, s3://, gs://, hf://<org>/<repo> and file:// are fetched "
            "by an init container into a writable volume before the server starts."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.matches(r'{URI_SCHEME_RE}')",
                    "spec.model.uri must start with one of pvc://, http://, https://, s3://, gs://, hf://, file://",
                ),
                cel(
                    f"!self.startsWith('pvc://') || self.matches(r'{PVC_URI_RE}')",
                    "spec.model.uri: a pvc URI is pvc://<claim>/<path>, where <claim> is a PersistentVolumeClaim "
                    "name (lowercase letters, digits, '-' and '.')",
                ),
            ]
        },
    )
    format: ModelFormat | None = Field(
        default=None,
        description=(
            "The model's file format: torch-export, torchscript, state-dict, safetensors or onnx. "
            "Detected from the files when absent."
        ),
    )
    name: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=MODEL_NAME_RE)] | None = (
        Field(
            default=None,
            description="The name clients use in requests (/v2/models/<name>). Default: the ModelDeployment's name.",
        )
    )
    version: (
        Annotated[str, StringConstraints(min_length=1, max_length=9, pattern=r"^[1-9][0-9]*$")] | None
    ) = Field(
        default=None, description='The served model version, a positive integer as a string. Default: "1".'
    )
    credentials_secret: DnsSubdomain | None = Field(
        default=None,
        description=(
            "Name of a Secret in the same namespace whose keys become environment variables of the "
            "model-fetch init container (e.g. AWS_ACCESS_KEY_ID, HF_TOKEN). The operator never reads it; "
            "a missing Secret shows as Ready=False with reason CreateContainerConfigError. Not used with pvc://."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.uri.startsWith('pvc://') || !has(self.credentialsSecret)",
                    "spec.model.credentialsSecret is not used with a pvc:// model: the claim is mounted, not fetched",
                    field_path=".credentialsSecret",
                )
            ]
        }
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        if not re.match(URI_SCHEME_RE, uri):
            raise ValueError(
                f"must start with one of {', '.join(s + '://' for s in URI_SCHEMES)}; got {uri!r}"
            )
        if uri.startswith("pvc://") and not re.match(PVC_URI_RE, uri):
            raise ValueError(
                f"a pvc URI is pvc://<claim>/<path>, where <claim> is a PersistentVolumeClaim name; got {uri!r}"
            )
        return uri

    @model_validator(mode="after")
    def _credentials(self) -> ModelSource:
        if self.uri.startswith("pvc://") and self.credentials_secret is not None:
            raise ValueError(
                "credentialsSecret is not used with a pvc:// model: the claim is mounted, not fetched"
            )
        return self

    @property
    def is_pvc(self) -> bool:
        return self.uri.startswith("pvc://")

    def pvc_claim_and_path(self) -> tuple[str, str]:
        """("claim", "sub/path") of a pvc:// URI; the path is "" for the claim's root."""
        rest = self.uri[len("pvc://") :]
        claim, _, path = rest.partition("/")
        return claim, path.strip("/")


# -- spec.gpu -----------------------------------------------------------------------------------


class Gpu(_Model):
    """The accelerator each replica gets. Absent (or count 0): the model runs on CPU."""

    count: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description=(
            "Whole GPUs per replica (requests nvidia.com/gpu). 0 runs on CPU. Default: 1 when the gpu "
            "block is present. With mig, must be absent or 1."
        ),
    )
    product: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE_RE)]], ...
        ]
        | None
    ) = Field(
        default=None,
        min_length=1,
        max_length=16,
        description=(
            "Acceptable GPU models, as the nvidia.com/gpu.product node label spells them (e.g. "
            "NVIDIA-H100-80GB-HBM3). Pods are only scheduled on nodes carrying one of them."
        ),
    )
    min_memory_gb: int | None = Field(
        default=None,
        alias="minMemoryGB",
        ge=1,
        le=4096,
        description=(
            "Minimum memory per GPU in vendor gigabytes (10^9 bytes, as printed on the card), matched "
            "against the nvidia.com/gpu.memory node label (MiB): 80 selects an 80GB H100 (81559 MiB)."
        ),
    )
    mig: Annotated[str, StringConstraints(max_length=32, pattern=MIG_PROFILE_RE)] | None = Field(
        default=None,
        description=(
            "A MIG profile such as 1g.10gb: each replica requests one nvidia.com/mig-<profile> device "
            "instead of whole GPUs (a CUDA process uses one MIG device)."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.mig) || !has(self.count) || self.count == 1",
                    "spec.gpu.count must be absent or 1 when spec.gpu.mig is set: a CUDA process uses one MIG device",
                    field_path=".count",
                ),
                cel(
                    "!has(self.mig) || !has(self.minMemoryGB)",
                    "spec.gpu.minMemoryGB does not apply with spec.gpu.mig: the MIG profile sets the memory",
                    field_path=".minMemoryGB",
                ),
                cel(
                    "!has(self.count) || self.count != 0 || (!has(self.product) && !has(self.minMemoryGB))",
                    "spec.gpu.product and spec.gpu.minMemoryGB need a GPU: spec.gpu.count is 0 (CPU)",
                    field_path=".count",
                ),
            ]
        }
    )

    @model_validator(mode="after")
    def _rules(self) -> Gpu:
        if self.mig is not None and self.count is not None and self.count != 1:
            raise ValueError("count must be absent or 1 when mig is set: a CUDA process uses one MIG device")
        if self.mig is not None and self.min_memory_gb is not None:
            raise ValueError("minMemoryGB does not apply with mig: the MIG profile sets the memory")
        if self.count == 0 and (self.product is not None or self.min_memory_gb is not None):
            raise ValueError("product and minMemoryGB need a GPU: count is 0 (CPU)")
        return self

    @property
    def whole_gpus(self) -> int:
        """Whole GPUs per replica: 0 for MIG or CPU."""
        if self.mig is not None:
            return 0
        return 1 if self.count is None else self.count

    @property
    def uses_accelerator(self) -> bool:
        return self.mig is not None or self.whole_gpus > 0


# -- spec.resources -----------------------------------------------------------------------------


class ResourceList(_Model):
    """CPU, memory and ephemeral storage, as Kubernetes quantities ("500m", "4Gi", 2)."""

    cpu: Quantity | None = Field(default=None, description='CPU cores, e.g. "500m" or 2.')
    memory: Quantity | None = Field(default=None, description='Memory in bytes, e.g. "8Gi".')
    ephemeral_storage: Quantity | None = Field(
        default=None, alias="ephemeral-storage", description='Local ephemeral storage, e.g. "20Gi".'
    )


class Resources(_Model):
    """Compute resources of the model-server container (GPUs come from spec.gpu)."""

    requests: ResourceList | None = Field(
        default=None, description="What the scheduler reserves per replica."
    )
    limits: ResourceList | None = Field(default=None, description="The most a replica may use.")


# -- pod pass-throughs --------------------------------------------------------------------------


class Toleration(_Model):
    """A Kubernetes toleration, passed through to the pods."""

    key: Annotated[str, StringConstraints(max_length=317)] | None = Field(
        default=None, description="The taint key the toleration applies to; empty matches all keys."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default Equal)."
    )
    value: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="The taint value to match (with operator Equal)."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="For NoExecute: how long the pod stays bound after the taint.",
    )


class LocalObjectReference(_Model):
    """A reference to an object in the same namespace, by name."""

    name: DnsSubdomain = Field(description="The object's name.")


class KeySelector(_Model):
    """One key of a Secret or ConfigMap."""

    name: DnsSubdomain = Field(description="The Secret's or ConfigMap's name.")
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="The key to read."
    )
    optional: bool | None = Field(default=None, description="Whether the key or object may be missing.")


class FieldRef(_Model):
    """A field of the pod, such as metadata.name or status.podIP."""

    field_path: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="The pod field to read, e.g. metadata.name."
    )


class EnvVarSource(_Model):
    """Where an environment variable's value comes from."""

    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    field_ref: FieldRef | None = Field(default=None, description="A field of the pod.")


class EnvVar(_Model):
    """An extra environment variable for the model-server container."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=ENV_NAME_RE)] = Field(
        description="The variable's name."
    )
    value: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        default=None, description="A literal value."
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="A value read from a Secret, ConfigMap or the pod."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.value) && has(self.valueFrom))",
                    "spec.runtime.env: set value or valueFrom, not both",
                    field_path=".valueFrom",
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self


# -- spec.runtime -------------------------------------------------------------------------------

Precision = Literal["fp32", "fp16", "bf16"]


class Runtime(_Model):
    """How the inference server runs: `modelplane serve` flags, image and extras."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        default=None,
        description="The runtime image (ENTRYPOINT modelplane). Default: the operator's MODELPLANE_RUNTIME_IMAGE.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Always, IfNotPresent or Never (Kubernetes' default when absent)."
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Largest batch the server forms from concurrent requests (--max-batch-size).",
    )
    max_queue_delay_microseconds: int | None = Field(
        default=None,
        ge=0,
        le=60_000_000,
        description="How long a request may wait for a batch to fill, in microseconds (--max-queue-delay-us).",
    )
    precision: Precision | None = Field(
        default=None,
        description="Compute precision: fp32, fp16 or bf16 (--precision). Default: the model's own.",
    )
    env: Annotated[list[EnvVar], Field(max_length=64)] | None = Field(
        default=None, description="Extra environment variables of the model-server container."
    )
    args: Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)] | None = (
        Field(default=None, description="Extra arguments appended to `modelplane serve ...`.")
    )
    auth_token_secret: DnsSubdomain | None = Field(
        default=None,
        description=(
            "Name of a Secret with a key `token`: mounted into the pod and passed as --auth-token-file, so "
            "inference requests need `Authorization: Bearer <token>` (health endpoints stay open)."
        ),
    )


# -- spec.startup, spec.autoscaling -------------------------------------------------------------


class Startup(_Model):
    """How long a replica may take to become ready."""

    max_load_seconds: int | None = Field(
        default=None,
        ge=10,
        le=86400,
        description=(
            "Seconds a replica may take from container start to ready (loading the model). Sizes the "
            "startupProbe, and the Deployment's progressDeadlineSeconds (this budget plus 120 s for "
            "scheduling, image pull and fetch), after which the ModelDeployment reports Stalled=True. "
            "Default: 600."
        ),
    )


class Autoscaling(_Model):
    """A HorizontalPodAutoscaler for the model's Deployment. When set, spec.replicas must be unset."""

    min_replicas: int | None = Field(default=None, ge=1, le=1000, description="Fewest replicas. Default: 1.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    target_cpu_utilization: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        alias="targetCPUUtilization",
        description="Target average CPU use, in percent of the CPU request. Default (no target given): 80.",
    )
    target_queue_depth: int | None = Field(
        default=None,
        ge=1,
        le=100000,
        description=(
            "Target average of queued requests per pod (the runtime's nv_inference_pending_request_count "
            "metric, served to the HPA by a custom-metrics adapter such as prometheus-adapter)."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                    "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas",
                    field_path=".minReplicas",
                ),
                cel(
                    "!(has(self.targetCPUUtilization) && has(self.targetQueueDepth))",
                    "spec.autoscaling: set targetCPUUtilization or targetQueueDepth, not both",
                    field_path=".targetQueueDepth",
                ),
            ]
        }
    )

    @model_validator(mode="after")
    def _rules(self) -> Autoscaling:
        if self.min_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be less than or equal to maxReplicas ({self.max_replicas})"
            )
        if self.target_cpu_utilization is not None and self.target_queue_depth is not None:
            raise ValueError("set targetCPUUtilization or targetQueueDepth, not both")
        return self


# -- the spec -----------------------------------------------------------------------------------


class ModelDeploymentSpec(_Model):
    """The desired state: one model, served by a Deployment of `modelplane serve` replicas."""

    model: ModelSource = Field(description="The model to serve.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Number of replicas. Default: 1. Must be unset when spec.autoscaling is set.",
    )
    resources: Resources | None = Field(
        default=None,
        description=(
            "CPU and memory of the model-server container. Default: requests cpu 1, memory 4Gi; "
            "limits memory 8Gi. GPUs come from spec.gpu."
        ),
    )
    gpu: Gpu | None = Field(default=None, description="GPUs per replica. Absent: CPU only.")
    runtime: Runtime | None = Field(default=None, description="The inference server's image and settings.")
    startup: Startup | None = Field(default=None, description="The startup budget.")
    autoscaling: Autoscaling | None = Field(
        default=None, description="Scale between min and max replicas with a HorizontalPodAutoscaler."
    )
    node_selector: Annotated[dict[LabelKey, LabelValue], Field(max_length=32)] | None = Field(
        default=None,
        description="Node labels the pods require (added to the GPU constraints).",
        json_schema_extra={"x-kubernetes-validations": [qualified_keys("spec.nodeSelector")]},
    )
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = Field(
        default=None,
        description="Extra tolerations (GPU pods always tolerate the nvidia.com/gpu NoSchedule taint).",
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description=(
            "A Kubernetes Affinity, passed through. Its required node affinity is combined with the "
            "GPU product and memory constraints (all must hold)."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: DnsSubdomain | None = Field(default=None, description="The pods' PriorityClass.")
    runtime_class_name: DnsSubdomain | None = Field(
        default=None,
        description="The pods' RuntimeClass (e.g. nvidia where the GPU runtime is not the default).",
    )
    service_account_name: DnsSubdomain | None = Field(
        default=None, description="The pods' ServiceAccount (e.g. for workload identity to read the model)."
    )
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] | None = Field(
        default=None, description="Secrets for pulling the runtime image, as [{name: ...}]."
    )
    pod_labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=32)] | None = Field(
        default=None,
        description=f"Extra pod labels. {SELECTOR_LABEL} and {MANAGED_BY_LABEL} are set by the operator.",
        json_schema_extra={
            "x-kubernetes-validations": [
                qualified_keys("spec.podLabels"),
                cel(
                    f"!('{SELECTOR_LABEL}' in self) && !('{MANAGED_BY_LABEL}' in self)",
                    f"spec.podLabels may not set {SELECTOR_LABEL} or {MANAGED_BY_LABEL}: the operator sets them",
                ),
            ]
        },
    )
    pod_annotations: (
        Annotated[dict[LabelKey, Annotated[str, StringConstraints(max_length=16384)]], Field(max_length=64)]
        | None
    ) = Field(
        default=None,
        description="Extra pod annotations.",
        json_schema_extra={"x-kubernetes-validations": [qualified_keys("spec.podAnnotations")]},
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.autoscaling) || !has(self.replicas)",
                    "spec.replicas must be unset when spec.autoscaling is set: the HorizontalPodAutoscaler "
                    "owns the replica count (use spec.autoscaling.minReplicas/maxReplicas)",
                    field_path=".replicas",
                )
            ]
        }
    )

    @field_validator("pod_labels")
    @classmethod
    def _pod_labels(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        for key in labels or {}:
            if key in RESERVED_POD_LABELS:
                raise ValueError(f"may not set {key}: the operator sets it")
        return labels

    @model_validator(mode="after")
    def _rules(self) -> ModelDeploymentSpec:
        if self.autoscaling is not None and self.replicas is not None:
            raise ValueError(
                "replicas must be unset when autoscaling is set: the HorizontalPodAutoscaler owns the replica count"
            )
        return self


# -- status -------------------------------------------------------------------------------------


class Condition(_Model):
    """A kstatus-style condition: Ready, Reconciling or Stalled."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="Ready, Reconciling or Stalled."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="A CamelCase word for the cause, e.g. Unschedulable or ImagePullBackOff."
    )
    message: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        default=None, description="What happened, in words, e.g. the scheduler's message."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition was computed for."
    )
    last_transition_time: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class Endpoints(_Model):
    """In-cluster addresses of the model's Service."""

    http: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None, description="Open Inference Protocol v2 over HTTP, e.g. http://<name>.<ns>.svc:8000."
    )
    grpc: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None,
        description="Open Inference Protocol v2 over gRPC, host:port as tritonclient.grpc expects.",
    )


class ModelDeploymentStatus(_Model):
    """The observed state, written by the operator only."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last acted on."
    )
    replicas: int | None = Field(
        default=None, ge=0, description="Pods of the model's Deployment (scale subresource)."
    )
    ready_replicas: int | None = Field(default=None, ge=0, description="Pods that are ready to serve.")
    selector: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="The pods' label selector, as a string (scale subresource)."
    )
    gpu: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None,
        description="The accelerator each replica gets, in short (e.g. 1x NVIDIA-H100-80GB-HBM3).",
    )
    endpoints: Endpoints | None = Field(
        default=None, description="Where clients reach the model in the cluster."
    )
    conditions: Annotated[list[Condition], Field(max_length=8)] | None = Field(
        default=None,
        description="Ready, Reconciling and Stalled, with kstatus semantics.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ObjectMeta(_Model):
    """The parts of metadata the renderer uses."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS1035_RE)] = Field(
        description="The ModelDeployment's name; also the name of its Deployment, Service, PDB and HPA."
    )
    namespace: DnsSubdomain | None = Field(default=None, description="The namespace.")
    uid: str | None = Field(default=None, description="Set by the API server; used for owner references.")
    generation: int | None = Field(default=None, description="Set by the API server.")

    model_config = ConfigDict(extra="ignore")


class ModelDeployment(_Model):
    """A model served on Kubernetes: one short resource, with status that says why when it cannot run."""

    api_version: Literal["modelplane.dev/v1alpha1"] = Field(description="modelplane.dev/v1alpha1")
    kind: Literal["ModelDeployment"] = Field(description="ModelDeployment")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="The desired state.")
    status: ModelDeploymentStatus | None = Field(default=None, description="The observed state.")
