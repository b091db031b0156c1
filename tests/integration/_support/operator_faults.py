"""The failing models of the integration tier: what each one is and what its status must say.

test_operator_faults.py checks the kubelet faults before any deadline. The stalling models (the same
faults, and a model no node can take) get the smallest startup budget the API allows, so their
Deployments' progress deadline passes 130 s after they are created; the session fixture
`deadline_models` (conftest.py) creates them at the session's first integration test, and the tests
that wait for that deadline (test_operator_stalled.py, test_gitops.py) run last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from modelplane.devcluster.stages import FAULT_ANNOTATION

from tests.integration._support.operator import RUNTIME_IMAGE
from tests.integration._support.operator_checks import mdep

MAX_LOAD_SECONDS = 10  # the API's minimum
PROGRESS_DEADLINE = MAX_LOAD_SECONDS + 120  # what the operator sets on the Deployment
# After the deadline: the Deployment controller's and then the operator's reaction (seconds).
REACTION = 90
CREDENTIALS = "s3-credentials"


@dataclass(frozen=True)
class Fault:
    spec: dict[str, Any]  # extra spec of the model
    reason: str  # the reason its Ready condition must carry
    words: str  # what its Ready message must say
    more: tuple[str, ...] = ()  # and what else it must say


FAULTS: dict[str, Fault] = {
    "image-pull": Fault(
        {"podAnnotations": {FAULT_ANNOTATION: "ImagePullBackOff"}},
        "ImagePullBackOff",
        f"cannot pull image {RUNTIME_IMAGE}",
    ),
    "crash-loop": Fault(
        {"podAnnotations": {FAULT_ANNOTATION: "CrashLoopBackOff"}},
        "CrashLoopBackOff",
        "keeps exiting: last exit code 1",
    ),
    "config-error": Fault(
        {"podAnnotations": {FAULT_ANNOTATION: "CreateContainerConfigError"}},
        "CreateContainerConfigError",
        "not found",
    ),
    # A credentialsSecret that does not exist. As a kubelet does, the fault stage reports the error
    # on the container whose env refers to the Secret, the model-fetch init container (envFrom), and
    # takes the Secret's name from there: the pod stays Pending with Initialized=False.
    "missing-credentials": Fault(
        {
            "model": {"uri": "s3://models/resnet50", "credentialsSecret": CREDENTIALS},
            "podAnnotations": {FAULT_ANNOTATION: "CreateContainerConfigError"},
        },
        "CreateContainerConfigError",
        f'secret "{CREDENTIALS}" not found',
        ("model fetch (init container model-fetch) of pod", "spec.model.credentialsSecret"),
    ),
}

# Every way a model stalls: a pod the kubelet cannot start or keep running, or one no node can take
# (no node has this GPU; a cluster autoscaler might add one, until the deadline).
STALLS: dict[str, Fault] = {
    **FAULTS,
    "unschedulable": Fault(
        {"gpu": {"count": 1, "product": ["NVIDIA-B200"]}},
        "Unschedulable",
        "didn't match Pod's node affinity/selector",
    ),
}


def fault_model(name: str, fault: Fault, **spec: Any) -> dict[str, Any]:
    """The ModelDeployment `name` that fails as `fault` says."""
    model = mdep(name, **spec)
    model["spec"].update(fault.spec)
    return model


def stalling_models() -> list[dict[str, Any]]:
    """Every model of STALLS, with the shortest progress deadline the API allows."""
    startup = {"maxLoadSeconds": MAX_LOAD_SECONDS}
    return [fault_model(name, fault, startup=startup) for name, fault in STALLS.items()]


@dataclass(frozen=True)
class DeadlineModels:
    """The stalling models, once their Deployments exist (their deadline clocks are running)."""

    namespace: str
    created: float  # time.monotonic() when they were applied

    def time_left(self) -> float:
        """How long a test may still wait for the models to be Stalled (at least 30 s)."""
        return max(self.created + PROGRESS_DEADLINE + REACTION - time.monotonic(), 30)
