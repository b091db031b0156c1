"""When the scheduler cannot place a model's pods, the ModelDeployment says why, in its words.

kstatus semantics: the model is not Ready, but Reconciling (a cluster autoscaler may still add a
node with the right GPU), not Stalled, until its progress deadline passes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration._support.kube import Kubectl, condition
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import (
    assert_condition,
    mdep,
    pods_of,
    wait_condition,
)

# Nothing here needs a fake GPU node: no node anywhere has 65 GPUs, a B200, or a 3g.40gb MIG device.
UNSATISFIABLE: dict[str, tuple[dict[str, Any], str]] = {
    "too-many-gpus": ({"count": 64}, "Insufficient nvidia.com/gpu"),
    "unknown-product": (
        {"count": 1, "product": ["NVIDIA-B200"]},
        "didn't match Pod's node affinity/selector",
    ),
    "unoffered-mig": ({"mig": "3g.40gb"}, "Insufficient nvidia.com/mig-3g.40gb"),
    # 86 vendor GB = 82016 MiB > 81559 MiB of an H100 80GB
    "too-little-memory": ({"count": 1, "minMemoryGB": 86}, "didn't match Pod's node affinity/selector"),
}
# "Within seconds": the scheduler answers at once; the operator writes on the pod's event.
PROMPT = 20


@pytest.mark.parametrize("name", list(UNSATISFIABLE))
def test_an_unschedulable_model_is_not_ready_with_the_schedulers_message(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, name: str
) -> None:
    gpu, expected = UNSATISFIABLE[name]
    kubectl.apply(mdep(name, gpu=gpu), namespace)
    obj = wait_condition(
        kubectl, namespace, name, "Ready", "False", reason="Unschedulable", message=expected, timeout=PROMPT
    )
    ready = condition(obj, "Ready")
    assert ready is not None
    # The scheduler's own words, not a paraphrase: the pod's PodScheduled message, verbatim.
    (pod,) = pods_of(kubectl, namespace, name)
    scheduled = condition(pod, "PodScheduled")
    assert scheduled is not None
    assert scheduled["reason"] == "Unschedulable"
    assert ready["message"] == scheduled["message"]
    assert ready["message"].startswith("0/")
    # Progressing while an autoscaler may add a node; not stalled (the deadline is minutes away).
    assert_condition(obj, "Reconciling", "True", "Unschedulable")
    assert_condition(obj, "Stalled", "False")
    assert obj["status"]["readyReplicas"] == 0
