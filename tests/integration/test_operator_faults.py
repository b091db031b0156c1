"""Pods the kubelet cannot start or keep running: the ModelDeployment says so, in the kubelet's words.

The devcluster's KWOK fault stages give pods the status a kubelet would (selected by the pod
annotation devcluster.modelplane.dev/fault, set through spec.podAnnotations). These models have the
default startup budget, so their progress deadline is minutes away; test_operator_stalled.py checks
the same faults past theirs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration._support.cluster import Cluster
from tests.integration._support.kube import Kubectl, condition, wait_for
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import (
    assert_condition,
    conditions_text,
    get_mdep,
    pods_of,
    shared_namespace,
    wait_condition,
)
from tests.integration._support.operator_faults import FAULTS, fault_model


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, faults: tuple[str, ...], operator: OperatorProcess) -> Iterator[str]:
    """The module's namespace with one model per fault (named `namespace` so a failure prints its
    contents)."""
    with shared_namespace(cluster.kubectl, "faults") as name:
        cluster.kubectl.apply([fault_model(model, fault) for model, fault in FAULTS.items()], name)
        yield name


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_failing_pod_makes_the_model_not_ready_with_the_kubelets_reason(
    kubectl: Kubectl, namespace: str, name: str
) -> None:
    fault = FAULTS[name]
    obj = wait_condition(
        kubectl, namespace, name, "Ready", "False", reason=fault.reason, message=fault.words, timeout=60
    )
    ready = condition(obj, "Ready")
    assert ready is not None
    assert ready["message"].startswith(f"{fault.reason}: ")
    for words in fault.more:
        assert words in ready["message"], ready["message"]
    (pod,) = pods_of(kubectl, namespace, name)
    assert pod["metadata"]["name"] in ready["message"]
    # Still progressing as far as kstatus knows: the kubelet keeps retrying.
    assert_condition(obj, "Reconciling", "True", fault.reason)
    assert_condition(obj, "Stalled", "False")


def test_the_crash_loop_message_stays_put_while_restarts_count_up(kubectl: Kubectl, namespace: str) -> None:
    """Restart counts and back-off times are not in the message, so it is not rewritten on each restart."""
    first = wait_condition(kubectl, namespace, "crash-loop", "Ready", "False", reason="CrashLoopBackOff")

    def restarts() -> int:
        (pod,) = pods_of(kubectl, namespace, "crash-loop")
        return int(pod["status"]["containerStatuses"][0]["restartCount"])

    before = restarts()
    wait_for(lambda: restarts() > before + 1, 30, "two more restarts of the crash-looping container")
    now = get_mdep(kubectl, namespace, "crash-loop")
    assert now is not None
    assert condition(now, "Ready") == condition(first, "Ready"), conditions_text(now)


def test_a_missing_credentials_secret_holds_the_pod_in_its_fetch_init_container(
    kubectl: Kubectl, namespace: str
) -> None:
    """The status the operator reads is the one a kubelet writes: the init container fails, the
    server container never starts."""
    wait_condition(
        kubectl, namespace, "missing-credentials", "Ready", "False", reason="CreateContainerConfigError"
    )
    (pod,) = pods_of(kubectl, namespace, "missing-credentials")
    assert pod["status"]["phase"] == "Pending"
    initialized = condition(pod, "Initialized")
    assert initialized is not None
    assert (initialized["status"], initialized["reason"]) == ("False", "ContainersNotInitialized")
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["name"] == "model-fetch"
    assert fetch["state"]["waiting"] == {
        "reason": "CreateContainerConfigError",
        "message": 'secret "s3-credentials" not found',
    }
    assert {c["state"]["waiting"]["reason"] for c in pod["status"]["containerStatuses"]} == {
        "PodInitializing"
    }
