"""Render: spec -> children. Every manifest is checked against Kubernetes 1.34's OpenAPI schema."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from modelplane.api.models import ModelDeployment, ModelDeploymentSpec
from modelplane.commands import render as render_command
from modelplane.render.children import (
    AUTH_TOKEN_FILE,
    DEFAULT_RUNTIME_IMAGE,
    Owner,
    RenderOptions,
    build_children,
    mib_threshold,
)
from modelplane.render.compare import HASH_ANNOTATION

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
K8S_VERSION = "1.34.0"  # the devcluster's control plane
OWNER = Owner(name="m", namespace="ns", uid="0000-1111")


def spec(**fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"uri": "https://h/model.pt"}, **fields})


def children(**fields: Any) -> dict[str, dict[str, Any]]:
    manifests = build_children(spec(**fields), OWNER, RenderOptions(default_image="img:1"))
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    return {m["kind"]: m for m in manifests}


def pod(**fields: Any) -> dict[str, Any]:
    pod_spec: dict[str, Any] = children(**fields)["Deployment"]["spec"]["template"]["spec"]
    return pod_spec


def server(**fields: Any) -> dict[str, Any]:
    container: dict[str, Any] = pod(**fields)["containers"][0]
    return container


def node_expressions(pod_spec: dict[str, Any]) -> list[list[dict[str, Any]]]:
    terms = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return [t["matchExpressions"] for t in terms]


# -- CPU and the common shape -------------------------------------------------------------------


def test_cpu_model_defaults() -> None:
    kids = children()
    assert set(kids) == {"Deployment", "Service"}  # one replica: no PDB, no HPA
    deployment = kids["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    pod_spec = deployment["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["image"] == "img:1"
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    assert "tolerations" not in pod_spec
    assert "affinity" not in pod_spec
    assert container["args"][:7] == [
        "serve",
        "--model-repository",
        "/mnt/models",
        "--model-name",
        "m",
        "--model-version",
        "1",
    ]
    assert container["args"][7:] == ["--http-port", "8000", "--grpc-port", "8001", "--metrics-port", "8002"]
    init = pod_spec["initContainers"][0]
    assert init["args"] == ["fetch", "https://h/model.pt", "/mnt/models", "--name", "m", "--version", "1"]
    assert pod_spec["volumes"][0] == {"name": "model", "emptyDir": {}}


def test_owner_references_labels_and_hash() -> None:
    for manifest in children(replicas=3, autoscaling=None).values():
        meta = manifest["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["name"] == "m"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "modelplane.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "m",
                "uid": "0000-1111",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "modelplane"
        assert meta["labels"]["modelplane.dev/model-deployment"] == "m"
        assert len(meta["annotations"][HASH_ANNOTATION]) == 16


def test_selector_is_one_stable_label() -> None:
    deployment = children(podLabels={"team": "a"})["Deployment"]
    assert deployment["spec"]["selector"] == {"matchLabels": {"modelplane.dev/model-deployment": "m"}}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "a"
    assert labels["modelplane.dev/model-deployment"] == "m"


def test_service_ports() -> None:
    service = children()["Service"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["http"]["port"] == 8000
    assert ports["http"]["appProtocol"] == "http"
    assert ports["grpc"]["port"] == 8001
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert ports["metrics"]["port"] == 8002
    assert service["spec"]["selector"] == {"modelplane.dev/model-deployment": "m"}


def test_prometheus_annotations_and_user_annotations() -> None:
    annotations = children(podAnnotations={"a": "b"})["Deployment"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8002"
    assert annotations["a"] == "b"


def test_restricted_security_context() -> None:
    pod_spec = pod()
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["automountServiceAccountToken"] is False
    for container in pod_spec["containers"] + pod_spec["initContainers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 1000
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # writable scratch on a read-only root
    fetch_mount = pod_spec["initContainers"][0]["volumeMounts"][0]
    assert fetch_mount["mountPath"] == "/mnt/models"
    assert not fetch_mount.get("readOnly")
    assert pod_spec["containers"][0]["volumeMounts"][0]["readOnly"] is True


# -- GPUs ---------------------------------------------------------------------------------------


def test_one_gpu() -> None:
    pod_spec = pod(gpu={"count": 1})
    resources = pod_spec["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec["tolerations"]
    assert "nvidia.com/gpu" not in pod_spec["initContainers"][0]["resources"].get("limits", {})
    assert "affinity" not in pod_spec  # no product or memory asked for


def test_multi_gpu() -> None:
    assert server(gpu={"count": 4})["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_gpu_block_alone_means_one_gpu_and_count_zero_means_cpu() -> None:
    assert server(gpu={})["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cpu_pod = pod(gpu={"count": 0})
    assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu_pod


def test_mig_requests_one_mig_device_instead_of_a_gpu() -> None:
    pod_spec = pod(gpu={"mig": "1g.10gb"})
    limits = pod_spec["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == "1"
    assert "nvidia.com/gpu" not in limits
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec["tolerations"]


def test_product_and_memory_affinity() -> None:
    pod_spec = pod(
        gpu={"count": 1, "product": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"], "minMemoryGB": 80}
    )
    assert node_expressions(pod_spec) == [
        [
            {
                "key": "nvidia.com/gpu.product",
                "operator": "In",
                "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
            },
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["76293"]},
        ]
    ]


@pytest.mark.parametrize(
    ("gigabytes", "mib", "selected"),
    [
        (80, 81559, True),  # H100 80GB HBM3
        (80, 81920, True),  # A100 80GB
        (80, 40960, False),  # A100 40GB
        (40, 40960, True),
        (24, 23034, True),  # L4 "24GB"
        (81, 76293, False),
    ],
)
def test_memory_threshold_is_vendor_gigabytes(gigabytes: int, mib: int, selected: bool) -> None:
    assert (mib > mib_threshold(gigabytes)) is selected
    assert mib_threshold(gigabytes) * 2**20 < gigabytes * 10**9 <= (mib_threshold(gigabytes) + 1) * 2**20


def test_user_affinity_is_kept_and_gpu_requirements_join_every_term() -> None:
    user = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"x": "y"}},
                    },
                }
            ]
        },
    }
    pod_spec = pod(gpu={"product": ["P"]}, affinity=user)
    terms = node_expressions(pod_spec)
    assert len(terms) == 2
    for term in terms:
        assert term[-1] == {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["P"]}
    assert pod_spec["affinity"]["podAntiAffinity"] == user["podAntiAffinity"]


def test_pass_throughs() -> None:
    pod_spec = pod(
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        priorityClassName="high",
        runtimeClassName="nvidia",
        serviceAccountName="reader",
        imagePullSecrets=[{"name": "regcred"}],
    )
    assert pod_spec["nodeSelector"] == {"pool": "gpu"}
    assert pod_spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ]
    assert pod_spec["priorityClassName"] == "high"
    assert pod_spec["runtimeClassName"] == "nvidia"
    assert pod_spec["serviceAccountName"] == "reader"
    assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]


# -- replicas, PDB, HPA -------------------------------------------------------------------------


def test_pdb_only_above_one_replica() -> None:
    assert "PodDisruptionBudget" not in children(replicas=1)
    pdb = children(replicas=2)["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {"modelplane.dev/model-deployment": "m"}}
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_scaled_to_zero_keeps_the_deployment() -> None:
    kids = children(replicas=0)
    assert kids["Deployment"]["spec"]["replicas"] == 0
    assert "PodDisruptionBudget" not in kids


def test_autoscaling_cpu_leaves_replicas_to_the_hpa() -> None:
    kids = children(autoscaling={"maxReplicas": 5})
    assert "replicas" not in kids["Deployment"]["spec"]
    hpa = kids["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m"}
    assert hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
        }
    ]
    assert "PodDisruptionBudget" not in kids


def test_autoscaling_on_queue_depth_with_a_pdb() -> None:
    kids = children(autoscaling={"minReplicas": 2, "maxReplicas": 6, "targetQueueDepth": 8})
    assert kids["HorizontalPodAutoscaler"]["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "nv_inference_pending_request_count"},
                "target": {"type": "AverageValue", "averageValue": "8"},
            },
        }
    ]
    assert "PodDisruptionBudget" in kids


# -- startup, models, runtime -------------------------------------------------------------------


def test_startup_budget_sets_probe_and_progress_deadline() -> None:
    kids = children(startup={"maxLoadSeconds": 900})
    probe = kids["Deployment"]["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 900
    assert probe["periodSeconds"] * (probe["failureThreshold"] - 1) < 900
    assert kids["Deployment"]["spec"]["progressDeadlineSeconds"] == 900 + 120
    default = children()["Deployment"]["spec"]
    assert default["progressDeadlineSeconds"] == 600 + 120


def test_liveness_and_readiness_probes() -> None:
    container = server()
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_pvc_model_is_mounted_read_only_without_a_fetch() -> None:
    pod_spec = pod(model={"uri": "pvc://store/models/resnet"})
    assert "initContainers" not in pod_spec
    assert pod_spec["volumes"][0] == {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "store", "readOnly": True},
    }
    mount = pod_spec["containers"][0]["volumeMounts"][0]
    assert mount == {
        "name": "model",
        "mountPath": "/mnt/models",
        "readOnly": True,
        "subPath": "models/resnet",
    }


def test_credentials_secret_becomes_env_of_the_fetch_only() -> None:
    pod_spec = pod(model={"uri": "s3://bucket/m", "credentialsSecret": "s3-creds"})
    assert pod_spec["initContainers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "envFrom" not in pod_spec["containers"][0]


def test_auth_token_is_mounted_and_passed() -> None:
    pod_spec = pod(runtime={"authTokenSecret": "tok"})
    container = pod_spec["containers"][0]
    assert container["args"][-2:] == ["--auth-token-file", AUTH_TOKEN_FILE]
    assert AUTH_TOKEN_FILE == "/var/run/secrets/modelplane/auth/token"
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "auth-token")
    assert volume["secret"]["secretName"] == "tok"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert any(m["mountPath"] == "/var/run/secrets/modelplane/auth" for m in container["volumeMounts"])


def test_runtime_flags_and_extras() -> None:
    container = server(
        model={"uri": "s3://b/m", "format": "onnx", "name": "clf", "version": "7"},
        runtime={
            "image": "mine:2",
            "imagePullPolicy": "Always",
            "maxBatchSize": 16,
            "maxQueueDelayMicroseconds": 500,
            "precision": "fp16",
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
            "args": ["--log-level", "debug"],
        },
    )
    assert container["image"] == "mine:2"
    assert container["imagePullPolicy"] == "Always"
    args = container["args"]
    assert args[args.index("--model-name") + 1] == "clf"
    assert args[args.index("--model-version") + 1] == "7"
    assert args[args.index("--model-format") + 1] == "onnx"
    assert args[args.index("--max-batch-size") + 1] == "16"
    assert args[args.index("--max-queue-delay-us") + 1] == "500"
    assert args[args.index("--precision") + 1] == "fp16"
    assert args[-2:] == ["--log-level", "debug"]
    assert {"name": "A", "value": "1"} in container["env"]
    assert {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}} in container["env"]


def test_default_image_comes_from_the_options() -> None:
    manifests = build_children(spec(), OWNER)
    assert manifests[0]["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULT_RUNTIME_IMAGE


def test_render_is_deterministic() -> None:
    assert build_children(spec(gpu={"count": 2}), OWNER) == build_children(spec(gpu={"count": 2}), OWNER)


# -- examples and the CLI -----------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_renders_to_valid_kubernetes(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        resource = ModelDeployment.model_validate(doc)
        owner = Owner(resource.metadata.name, "default", "uid")
        for manifest in build_children(resource.spec, owner):
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_required_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"cpu-quickstart.yaml", "gpu-single.yaml", "mig.yaml", "autoscaled.yaml"} <= names


def run_render(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = render_command.main(args)
    return code, out.getvalue(), err.getvalue()


def test_cli_render_prints_the_children(tmp_path: Path) -> None:
    code, out, _ = run_render(
        ["-f", str(ROOT / "examples" / "gpu-single.yaml"), "-n", "team", "--image", "x:1"]
    )
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert all(d["metadata"]["namespace"] == "team" for d in docs)
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "x:1"


def test_cli_render_names_the_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: modelplane.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\n"
        "spec: {model: {uri: 's3://b/m'}, gpu: {mig: 1g.10gb, count: 2}}\n"
    )
    code, out, err = run_render(["-f", str(bad)])
    assert code == 1
    assert out == ""
    assert "spec.gpu:" in err
    assert "count must be absent or 1" in err


def test_cli_render_rejects_other_kinds_and_missing_files(tmp_path: Path) -> None:
    other = tmp_path / "pod.yaml"
    other.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    code, _, err = run_render(["-f", str(other)])
    assert code == 1
    assert "apiVersion/kind" in err
    code, _, err = run_render(["-f", str(tmp_path / "missing.yaml")])
    assert code == 1
    assert "missing.yaml" in err
