"""The Helm chart, rendered by real Helm (built from its Go module): lint, objects, RBAC, generated copies.

Every documented option is rendered and linted; every rendered object is validated against the
Kubernetes OpenAPI schemas; the RBAC must equal files/operator-rules.yaml plus only what Kopf needs.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from modelplane.commands import crd as crd_command

from tests.tools import generate, monitoring
from tests.tools.binaries import helm_binary
from tests.tools.chart import HelmError, find, lint, one, run_helm, template

# The first test may build the Go tool from source (minutes on a cold cache), inside its fixture.
pytestmark = pytest.mark.timeout(1800)

CHART = generate.CHART_DIR
RULES_FILE = CHART / "files" / "operator-rules.yaml"
PYPROJECT = generate.REPO_ROOT / "pyproject.toml"
RELEASE, NAMESPACE = "mp", "modelplane-system"
FULLNAME = "mp-modelplane"

# Every documented option, one case each: what a user would set.
OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "peering": {"replicaCount": 2},
    "peering-fast-takeover": {"replicaCount": 2, "operator": {"peeringLifetimeSeconds": 15}},
    "peering-namespaced": {"replicaCount": 3, "operator": {"watchNamespaces": ["team-a"]}},
    "peering-crds-elsewhere": {
        "replicaCount": 2,
        "operator": {"installPeeringCRDs": False, "peeringName": "shared"},
    },
    "monitors": {
        "serviceMonitor": {"enabled": True, "interval": "1m", "labels": {"release": "kube-prometheus"}},
        "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    },
    "monitors-namespaced": {
        "operator": {"watchNamespaces": ["team-a"]},
        "podMonitor": {"enabled": True},
    },
    "no-crds": {"crds": {"install": False}},
    "resources": {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}},
    "images": {
        "image": {
            "repository": "registry.example.com:5000/ml/operator",
            "tag": "1.2.3",
            "pullPolicy": "Always",
        },
        "runtime": {
            "image": {"repository": "registry.example.com/ml/runtime", "digest": "sha256:" + "a" * 64}
        },
        "imagePullSecrets": [{"name": "regcred"}],
    },
    "existing-service-account": {"serviceAccount": {"create": False, "name": "platform-operator"}},
    "no-rbac": {"rbac": {"create": False}},
    "scheduling": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                    ]
                }
            }
        },
        "priorityClassName": "system-cluster-critical",
        "podLabels": {"team": "ml-platform"},
        "podAnnotations": {"example.com/owner": "ml-platform"},
        "serviceAccount": {"annotations": {"iam.example.com/role": "operator"}},
    },
    "operator-settings": {
        "operator": {
            "resyncSeconds": 300,
            "healthPort": 8181,
            "metricsPort": 9191,
            "extraArgs": ["--verbose"],
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        },
        "livenessProbe": {"periodSeconds": 30, "failureThreshold": 5},
        "service": {"type": "NodePort"},
    },
    "names": {"fullnameOverride": "ml-operator", "tests": {"image": "python:3.11-slim"}},
}

# Kinds with no schema in kubernetes-validate (CRDs of other projects and our own custom resources).
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "KopfPeering", "ClusterKopfPeering"}
RBAC_KINDS = {"ClusterRole", "Role"}


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def merged(overrides: dict[str, Any]) -> dict[str, Any]:
    """The chart defaults with overrides applied (what helm computes), for assertions."""
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = copy.deepcopy(value)

    merge(values, overrides)
    return values


def operator_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(RULES_FILE.read_text())
    return rules


def canonical(rules: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], ...]]:
    """Rules as sorted tuples, so order and list order do not matter."""
    return sorted(
        (
            tuple(sorted(rule.get("apiGroups", []))),
            tuple(sorted(rule.get("resources", []))),
            tuple(sorted(rule.get("verbs", []))),
            tuple(sorted(rule.get("resourceNames", []))),
            tuple(sorted(rule.get("nonResourceURLs", []))),
        )
        for rule in rules
    )


def container(objects: list[dict[str, Any]], name: str = FULLNAME) -> dict[str, Any]:
    deployment = one(objects, "Deployment", name)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    result: dict[str, Any] = containers[0]
    return result


# -- the chart as a whole ----------------------------------------------------------------------


def test_chart_metadata_follows_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == version, (
        "Chart.yaml appVersion must equal the package version in pyproject.toml"
    )


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_lint_strict(helm: Path, option: str) -> None:
    lint(helm, OPTIONS[option])


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("kube_version", ["1.29.0", kubernetes_validate.latest_version()])
def test_every_rendered_object_is_valid_kubernetes(helm: Path, option: str, kube_version: str) -> None:
    objects = template(helm, OPTIONS[option])
    assert objects
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{option}: {obj['kind']}/{obj['metadata']['name']} is invalid for {kube_version}: {exc}"
            )


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_selector_labels_never_change_with_values(helm: Path, option: str) -> None:
    """A Deployment's selector is immutable: no value may change it (or `helm upgrade` fails)."""
    name = merged(OPTIONS[option])["fullnameOverride"] or FULLNAME
    objects = template(helm, OPTIONS[option])
    deployment = one(objects, "Deployment", name)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "modelplane", "app.kubernetes.io/instance": RELEASE}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert one(objects, "Service", name)["spec"]["selector"] == selector
    # Only the operator's pods match the selector: the helm test Pod must not receive its traffic.
    for pod in find(objects, "Pod"):
        assert not selector.items() <= pod["metadata"]["labels"].items(), pod["metadata"]["name"]


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_object_has_the_common_labels_and_a_short_name(helm: Path, option: str) -> None:
    for obj in template(helm, OPTIONS[option]):
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/instance") == RELEASE, where
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", where
        assert len(obj["metadata"]["name"]) <= 63 or obj["kind"] == "CustomResourceDefinition", where


def test_long_release_names_are_cut_to_63_characters(helm: Path) -> None:
    release = "r" * 53  # Helm's longest release name; with "-modelplane" it is 64 characters
    objects = template(helm, release=release)
    for obj in objects:
        if obj["kind"] != "CustomResourceDefinition":
            assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
    assert one(objects, "Deployment")["metadata"]["name"] == release + "-modelplan"
    assert one(objects, "Pod")["metadata"]["name"] == release + "-mode-test"


# -- the operator Deployment -------------------------------------------------------------------


def test_deployment_defaults(helm: Path) -> None:
    objects = template(helm)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deployment = one(objects, "Deployment", FULLNAME)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    operator = container(objects)

    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "an upgrade must never run two operators at once"
    assert pod["serviceAccountName"] == FULLNAME
    assert operator["image"] == f"ghcr.io/modelplane/operator:{chart['appVersion']}"
    assert operator["args"] == [
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
        "--resync-seconds=60",
    ]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["MODELPLANE_RUNTIME_IMAGE"] == f"ghcr.io/modelplane/runtime:{chart['appVersion']}"
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert operator["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert operator["resources"]["limits"] == {"memory": "512Mi"}
    # Read-only root filesystem: the only writable path is the /tmp emptyDir.
    assert operator["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp"
    assert "emptyDir" in pod["volumes"][0]


def test_security_contexts_meet_the_restricted_pod_security_standard(helm: Path) -> None:
    objects = template(helm, OPTIONS["scheduling"])
    pods = [
        one(objects, "Deployment")["spec"]["template"]["spec"],
        *[p["spec"] for p in find(objects, "Pod")],
    ]
    assert len(pods) == 2  # the operator and the helm test Pod
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod.get("hostNetwork") is not True
        assert pod.get("hostPID") is not True
        for c in pod["containers"]:
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "privileged" not in context


def test_images_and_operator_settings_follow_values(helm: Path) -> None:
    objects = template(helm, {**OPTIONS["images"], **OPTIONS["operator-settings"]})
    operator = container(objects)
    assert operator["image"] == "registry.example.com:5000/ml/operator:1.2.3"
    assert operator["imagePullPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in operator["env"]}
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert env["MODELPLANE_RUNTIME_IMAGE"] == (
        f"registry.example.com/ml/runtime:{chart['appVersion']}@sha256:{'a' * 64}"
    )
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert operator["args"] == [
        "--liveness=http://0.0.0.0:8181/healthz",
        "--metrics-port=9191",
        "--resync-seconds=300",
        "--verbose",
    ]
    assert operator["livenessProbe"]["periodSeconds"] == 30
    assert operator["livenessProbe"]["failureThreshold"] == 5
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    service = one(objects, "Service")
    assert service["spec"]["type"] == "NodePort"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"metrics": 9191, "health": 8181}


def test_namespaced_mode_passes_each_namespace(helm: Path) -> None:
    operator = container(template(helm, OPTIONS["namespaced"]))
    assert operator["args"][:2] == ["--namespace=team-a", "--namespace=team-b"]


def test_scheduling_values_reach_the_pod(helm: Path) -> None:
    objects = template(helm, OPTIONS["scheduling"])
    pod_template = one(objects, "Deployment")["spec"]["template"]
    values = OPTIONS["scheduling"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod_template["spec"][key] == values[key]
    assert pod_template["metadata"]["labels"]["team"] == "ml-platform"
    assert pod_template["metadata"]["annotations"]["example.com/owner"] == "ml-platform"
    assert one(objects, "ServiceAccount")["metadata"]["annotations"] == {"iam.example.com/role": "operator"}


def test_a_change_of_the_operator_rules_restarts_the_operator(helm: Path) -> None:
    annotations = one(template(helm), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/rules"])


def test_existing_service_account_is_used_not_created(helm: Path) -> None:
    objects = template(helm, OPTIONS["existing-service-account"])
    assert not find(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "platform-operator", "namespace": NAMESPACE}
    ]


def test_existing_service_account_needs_a_name(helm: Path) -> None:
    with pytest.raises(HelmError, match=r"serviceAccount\.name is required"):
        template(helm, {"serviceAccount": {"create": False}})


# -- RBAC --------------------------------------------------------------------------------------


def rbac_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in RBAC_KINDS]


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_no_rbac_rule_has_a_wildcard_or_touches_secrets(helm: Path, option: str) -> None:
    for role in rbac_objects(template(helm, OPTIONS[option])):
        for rule in role["rules"]:
            where = f"{option}: {role['kind']}/{role['metadata']['name']} rule {rule}"
            for field in ("apiGroups", "resources", "verbs"):
                assert all("*" not in item for item in rule.get(field, [])), where
            assert not any(r.split("/")[0] == "secrets" for r in rule.get("resources", [])), where
            assert "nonResourceURLs" not in rule, where
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where


def test_operator_rules_file_has_no_wildcard_and_no_secret() -> None:
    for rule in operator_rules():
        assert "*" not in str(rule), rule
        assert "secrets" not in rule["resources"], rule


def test_cluster_mode_grants_exactly_the_operator_rules(helm: Path) -> None:
    objects = template(helm)
    assert not find(objects, "Role")
    assert not find(objects, "RoleBinding")
    role = one(objects, "ClusterRole", FULLNAME)
    assert canonical(role["rules"]) == canonical(operator_rules())
    binding = one(objects, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": FULLNAME,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}


def test_namespaced_mode_grants_roles_per_namespace_and_only_cluster_reads(helm: Path) -> None:
    objects = template(helm, OPTIONS["namespaced"])
    rules = operator_rules()
    namespaced = [r for r in rules if not set(r["resources"]) & CLUSTER_SCOPED]
    cluster = [r for r in rules if set(r["resources"]) & CLUSTER_SCOPED]

    roles = find(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert canonical(role["rules"]) == canonical(namespaced)
    bindings = find(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]

    # Cluster-wide: only the cluster-scoped rules, all of them reads.
    cluster_role = one(objects, "ClusterRole")
    assert canonical(cluster_role["rules"]) == canonical(cluster)
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_namespaced_mode_lets_kopf_read_crds_and_namespace_names(helm: Path) -> None:
    """Kopf lists and watches CRDs (resource discovery) and, with --namespace, namespaces."""
    granted = {
        (resource, verb)
        for rule in one(template(helm, OPTIONS["namespaced"]), "ClusterRole")["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {(r, v) for r in ("customresourcedefinitions", "namespaces") for v in ("list", "watch")}
    assert needed <= granted


def test_peering_adds_only_the_peering_rules(helm: Path) -> None:
    peering_rule = {"apiGroups": ["kopf.dev"], "verbs": ["get", "list", "watch", "patch"]}
    cluster = one(template(helm, OPTIONS["peering"]), "ClusterRole")
    expected = [*operator_rules(), {**peering_rule, "resources": ["clusterkopfpeerings"]}]
    assert canonical(cluster["rules"]) == canonical(expected)

    objects = template(helm, OPTIONS["peering-namespaced"])
    role = one(objects, "Role")
    assert {**peering_rule, "resources": ["kopfpeerings"]} in role["rules"]
    assert not any("kopfpeerings" in r["resources"] for r in one(objects, "ClusterRole")["rules"])


def test_rbac_can_be_left_to_the_platform(helm: Path) -> None:
    objects = template(helm, OPTIONS["no-rbac"])
    assert not [
        o for o in objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    ]


def test_a_rule_mixing_scopes_fails_the_render(helm: Path, tmp_path: Path) -> None:
    """A Role silently drops cluster-scoped resources, so a mixed rule must stop the render."""
    import shutil

    chart = tmp_path / "modelplane"
    shutil.copytree(CHART, chart)
    mixed = [
        {
            "apiGroups": ["", "apiextensions.k8s.io"],
            "resources": ["pods", "customresourcedefinitions"],
            "verbs": ["get"],
        }
    ]
    (chart / "files" / "operator-rules.yaml").write_text(yaml.safe_dump(mixed))
    with pytest.raises(HelmError, match="mixes cluster-scoped and namespaced resources"):
        run_helm(helm, "template", RELEASE, str(chart), "--set", "operator.watchNamespaces={team-a}")


# -- CRDs, peering, monitors, helm test --------------------------------------------------------


def test_crds_are_templates_kept_on_uninstall(helm: Path) -> None:
    objects = template(helm)
    sources = sorted(generate.CRDS_DIR.glob("*.yaml"))
    assert sources, "crds/ has no CRD: run `make generate`"
    for source in sources:
        crd = yaml.safe_load(source.read_text())
        rendered = one(objects, "CustomResourceDefinition", crd["metadata"]["name"])
        assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert rendered["spec"] == crd["spec"], (
            f"the chart's copy of {source.name} is stale: run `make generate`"
        )
    assert not find(template(helm, OPTIONS["no-crds"]), "CustomResourceDefinition")


def test_peering_installs_kopf_crds_and_a_peering_object(helm: Path) -> None:
    objects = template(helm, OPTIONS["peering"])
    assert one(objects, "Deployment")["spec"]["replicas"] == 2
    args = container(objects)["args"]
    assert f"--peering={FULLNAME}" in args
    assert "--peering-lifetime=60" in args
    # Each pod is its own peer: the operator takes its identity from POD_NAME.
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    fast = container(template(helm, OPTIONS["peering-fast-takeover"]))["args"]
    assert "--peering-lifetime=15" in fast
    crds = {
        c["metadata"]["name"]: c
        for c in find(objects, "CustomResourceDefinition")
        if "kopf" in c["metadata"]["name"]
    }
    assert set(crds) == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    for crd in crds.values():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"]["group"] == "kopf.dev"
        assert crd["spec"]["versions"][0]["name"] == "v1"
    peering = one(objects, "ClusterKopfPeering", FULLNAME)
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"

    single = template(helm)
    assert not [a for a in container(single)["args"] if a.startswith("--peering")]
    assert not find(single, "ClusterKopfPeering")
    assert not find(single, "KopfPeering")


def test_namespaced_peering_uses_a_peering_object_per_namespace(helm: Path) -> None:
    objects = template(helm, OPTIONS["peering-namespaced"])
    peerings = find(objects, "KopfPeering")
    assert [(p["metadata"]["name"], p["metadata"]["namespace"]) for p in peerings] == [(FULLNAME, "team-a")]
    assert not find(objects, "ClusterKopfPeering")


def test_peering_crds_can_belong_to_another_operator(helm: Path) -> None:
    objects = template(helm, OPTIONS["peering-crds-elsewhere"])
    assert not [c for c in find(objects, "CustomResourceDefinition") if "kopf" in c["metadata"]["name"]]
    assert one(objects, "ClusterKopfPeering", "shared")
    assert "--peering=shared" in container(objects)["args"]


def test_service_monitor_scrapes_the_operator_service(helm: Path) -> None:
    objects = template(helm, OPTIONS["monitors"])
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["interval"] == "1m"
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    defaults = template(helm)
    assert not find(defaults, "ServiceMonitor")
    assert not find(defaults, "PodMonitor")


def test_pod_monitor_scrapes_the_models_runtime_metrics(helm: Path) -> None:
    monitor = one(template(helm, OPTIONS["monitors"]), "PodMonitor")
    assert monitor["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "modelplane"}}
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    namespaced = one(template(helm, OPTIONS["monitors-namespaced"]), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


@pytest.fixture(scope="module")
def monitoring_crds() -> dict[str, dict[str, Any]]:
    return monitoring.load_crds()


@pytest.mark.parametrize("option", ["monitors", "monitors-namespaced"])
def test_monitors_are_valid_for_the_prometheus_operator_crds(
    helm: Path, monitoring_crds: dict[str, dict[str, Any]], option: str
) -> None:
    """Strict validation (unknown fields rejected) against the pinned upstream CRD schemas."""
    monitors = [o for o in template(helm, OPTIONS[option]) if o["kind"] in monitoring_crds]
    assert monitors
    for obj in monitors:
        assert monitoring.validation_errors(obj, monitoring_crds[obj["kind"]]) == [], obj["kind"]


def test_monitor_validation_can_fail(helm: Path, monitoring_crds: dict[str, dict[str, Any]]) -> None:
    monitor = one(template(helm, OPTIONS["monitors"]), "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["portName"] = "metrics"  # not a PodMonitor field
    errors = monitoring.validation_errors(monitor, monitoring_crds["PodMonitor"])
    assert any("portName" in error for error in errors), errors


def test_pod_monitor_matches_the_pods_the_operator_renders(helm: Path) -> None:
    """The PodMonitor's selector and port name are the render's contract: check them against it."""
    from modelplane.api.models import METRICS_PORT
    from modelplane.commands.render import render_documents
    from modelplane.render.children import RenderOptions

    example = yaml.safe_load((generate.REPO_ROOT / "examples" / "cpu-quickstart.yaml").read_text())
    children = render_documents([example], "ml", RenderOptions())
    pod = one(children, "Deployment")["spec"]["template"]
    monitor = one(template(helm, OPTIONS["monitors"]), "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert ports[monitor["spec"]["podMetricsEndpoints"][0]["port"]] == METRICS_PORT == 8002
    # ...and the operator's own Service never selects a model pod.
    service = one(template(helm), "Service")
    assert not service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_helm_test_pod_checks_crd_and_health(helm: Path) -> None:
    objects = template(helm)
    pod = one(objects, "Pod", f"{FULLNAME}-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == FULLNAME
    test = spec["containers"][0]
    assert test["command"] == ["python", "-c"]
    assert test["args"] == [(CHART / "files" / "helm-test.py").read_text()]
    env = {e["name"]: e["value"] for e in test["env"]}
    assert env["MODELPLANE_TEST_HEALTH_URL"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8080/healthz"
    assert test["image"] == container(objects)["image"]
    assert (
        one(template(helm, OPTIONS["names"]), "Pod")["spec"]["containers"][0]["image"] == "python:3.11-slim"
    )


def test_notes_say_what_was_installed(helm: Path) -> None:
    out = run_helm(
        helm, "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
        values=OPTIONS["peering-namespaced"],
    )  # fmt: skip
    notes = out.split("NOTES:", 1)[1]
    assert "the namespaces: team-a" in notes
    assert f'3 pods peering through "{FULLNAME}"' in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes


# -- values: documented, schema-checked --------------------------------------------------------

PASS_THROUGH = {"podSecurityContext", "securityContext", "resources"}


def leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in PASS_THROUGH:
            paths += leaf_paths(value, path + ".")
        else:
            paths.append(path)
    return paths


def test_every_value_is_documented_by_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    parents: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        parents = [(i, k) for i, k in parents if i < indent]
        inside_pass_through = any(k in PASS_THROUGH for _, k in parents)
        parents.append((indent, key))
        if inside_pass_through:
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            undocumented.append(".".join(k for _, k in parents))
    assert not undocumented, f"values.yaml keys without a comment above them: {undocumented}"


def test_schema_covers_every_value_and_describes_it() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def schema_for(path: str) -> dict[str, Any]:
        node = schema
        for key in path.split("."):
            assert key in node.get("properties", {}), f"values.schema.json has no property for {path}"
            node = node["properties"][key]
        return node

    for path in leaf_paths(values):
        assert schema_for(path).get("description"), f"values.schema.json: {path} has no description"


def test_default_values_pass_the_schema(helm: Path) -> None:
    template(helm)


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("zero replicas", {"replicaCount": 0}, "/replicaCount"),
    ("replicas as text", {"replicaCount": "two"}, "/replicaCount"),
    ("unknown pull policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("bad namespace name", {"operator": {"watchNamespaces": ["Team_A"]}}, "/operator/watchNamespaces/0"),
    ("duplicate namespace", {"operator": {"watchNamespaces": ["a", "a"]}}, "/operator/watchNamespaces"),
    ("crds.install as text", {"crds": {"install": "yes"}}, "/crds/install"),
    ("a typo at the top", {"replicaCont": 2}, "replicaCont"),
    ("a typo inside", {"operator": {"resyncSecond": 5}}, "resyncSecond"),
    ("short digest", {"image": {"digest": "sha256:abc"}}, "/image/digest"),
    ("tag with a colon", {"runtime": {"image": {"tag": "v1:latest"}}}, "/runtime/image/tag"),
    ("uppercase repository", {"image": {"repository": "GHCR.io/Modelplane/Operator"}}, "/image/repository"),
    ("port out of range", {"operator": {"metricsPort": 70000}}, "/operator/metricsPort"),
    ("negative resync", {"operator": {"resyncSeconds": -1}}, "/operator/resyncSeconds"),
    (
        "peering lifetime too short",
        {"operator": {"peeringLifetimeSeconds": 3}},
        "/operator/peeringLifetimeSeconds",
    ),
    (
        "interval in words",
        {"serviceMonitor": {"enabled": True, "interval": "30 seconds"}},
        "/serviceMonitor/interval",
    ),
    ("label value not text", {"podLabels": {"team": 7}}, "/podLabels/team"),
    ("service type", {"service": {"type": "Ingress"}}, "/service/type"),
    ("pull secret as text", {"imagePullSecrets": ["regcred"]}, "/imagePullSecrets/0"),
]


@pytest.mark.parametrize(
    ("values", "names"), [(v, n) for _, v, n in BAD_VALUES], ids=[c for c, _, _ in BAD_VALUES]
)
def test_schema_rejects_bad_values_naming_them(helm: Path, values: dict[str, Any], names: str) -> None:
    with pytest.raises(HelmError) as failure:
        template(helm, values)
    message = str(failure.value)
    assert "values don't meet the specifications of the schema" in message, message
    assert names in message, message


@pytest.mark.parametrize("key", ["app.kubernetes.io/name", "app.kubernetes.io/instance"])
def test_pod_labels_cannot_override_the_selector_labels(helm: Path, key: str) -> None:
    with pytest.raises(HelmError, match=re.escape(f"podLabels.{key}: {key} is a selector label")):
        template(helm, {"podLabels": {key: "other"}})


def test_schema_rejects_bad_values_at_lint_and_install_too(helm: Path) -> None:
    with pytest.raises(HelmError, match="/replicaCount"):
        lint(helm, {"replicaCount": -1})
    with pytest.raises(HelmError, match="/replicaCount"):
        run_helm(helm, "install", RELEASE, str(CHART), "--dry-run=client", values={"replicaCount": -1})


# -- generated copies --------------------------------------------------------------------------


def test_generated_files_are_current(helm: Path) -> None:
    """The chart's CRD templates, the argocd-cm patch and charts/install.yaml match their sources."""
    stale = generate.stale(generate.expected_files(helm))
    assert not stale, f"stale generated files (run `make generate`): {stale}"


def test_a_change_to_the_api_models_makes_crds_and_the_charts_copy_stale_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One `make generate` follows the whole chain: crds/ comes from the models, the chart's CRD
    template from what crds/ will hold (not from the stale file on disk)."""
    assert generate.stale(generate.expected_files(None)) == []
    real = crd_command.crd_yaml()
    changed = real.replace("Ready", "Ready-changed", 1)
    monkeypatch.setattr(crd_command, "crd_yaml", lambda: changed)
    files = generate.expected_files(None)
    (source,) = [path for path in files if path.parent == generate.CRDS_DIR]
    (copy,) = [path for path in files if path.parent == generate.CHART_CRDS_DIR]
    assert files[source] == changed
    assert "Ready-changed" in files[copy]
    assert generate.stale(files) == sorted(
        [str(source.relative_to(generate.REPO_ROOT)), str(copy.relative_to(generate.REPO_ROOT))]
    )


def test_stale_detection_reports_edited_missing_and_orphaned_copies(tmp_path: Path) -> None:
    """The staleness check can fail: a hand edit, a missing copy and a copy without a source."""
    crds = tmp_path / "crds"
    crds.mkdir()
    current, edited, missing, orphan = (
        crds / f"{n}.yaml" for n in ("current", "edited", "missing", "orphan")
    )
    current.write_text("a\n")
    edited.write_text("hand edit\n")
    orphan.write_text("left over\n")
    files = {current: "a\n", edited: "b\n", missing: "c\n"}
    assert generate.stale(files, crds) == sorted(
        [str(edited), str(missing), f"{orphan} (no source in crds/)"]
    )


def test_install_manifest_is_the_default_chart_with_its_namespace(helm: Path) -> None:
    docs = [d for d in yaml.safe_load_all(generate.INSTALL_MANIFEST.read_text()) if d]
    namespace = docs[0]
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == generate.INSTALL_NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kinds = {d["kind"] for d in docs}
    assert {
        "CustomResourceDefinition",
        "Deployment",
        "ClusterRole",
        "ClusterRoleBinding",
        "ServiceAccount",
    } <= kinds
    assert "Pod" not in kinds, "the helm test Pod does not belong in the plain manifest"
    for doc in docs[1:]:
        if doc["kind"] not in {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}:
            assert doc["metadata"]["namespace"] == generate.INSTALL_NAMESPACE, doc["metadata"]["name"]
