"""The faulted models of test_operator_faults.py and test_operator_stalled.py: what each one is and
what its status must say (the fixture creating them is in operator_fixtures.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from modelplane.devcluster.stages import FAULT_ANNOTATION

from tests.integration._support.operator import RUNTIME_IMAGE

MAX_LOAD_SECONDS = 10  # the API's minimum
PROGRESS_DEADLINE = MAX_LOAD_SECONDS + 120  # what the operator sets on the Deployment
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


@dataclass(frozen=True)
class FaultedModels:
    namespace: str
    created: float  # time.monotonic() when they were applied

    def elapsed(self) -> float:
        return time.monotonic() - self.created
