"""Past the progress deadline a failing model is Stalled (kstatus: Failed), and Ready keeps the cause.

The smallest startup budget the API allows (maxLoadSeconds 10) gives the Deployment a progress
deadline of 130 s. The models are the session's `faulted_models`, created by test_operator_faults.py
(the first operator module); this module runs last, so most of the wait has already passed.
"""

from __future__ import annotations

import pytest

from tests.integration._support.kube import Kubectl, condition
from tests.integration._support.operator_checks import assert_condition, wait_condition
from tests.integration._support.operator_faults import FAULTS, PROGRESS_DEADLINE, FaultedModels

pytest_plugins = ["tests.integration._support.operator_fixtures"]


@pytest.fixture(scope="module")
def namespace(faulted_models: FaultedModels) -> str:
    return faulted_models.namespace


@pytest.mark.parametrize("name", list(FAULTS))
def test_past_the_progress_deadline_a_failing_model_is_stalled(
    kubectl: Kubectl, namespace: str, faulted_models: FaultedModels, name: str
) -> None:
    fault = FAULTS[name]
    # The deadline, then the Deployment controller's and the operator's reaction (seconds).
    remaining = PROGRESS_DEADLINE + 60 - faulted_models.elapsed()
    obj = wait_condition(
        kubectl,
        namespace,
        name,
        "Stalled",
        "True",
        reason="ProgressDeadlineExceeded",
        timeout=max(remaining, 30),
    )
    stalled = condition(obj, "Stalled")
    assert stalled is not None
    assert "progress" in stalled["message"], stalled
    # The root cause stays in Ready; nothing is progressing any more.
    assert_condition(obj, "Ready", "False", fault.reason)
    assert fault.words in str((condition(obj, "Ready") or {}).get("message"))
    assert_condition(obj, "Reconciling", "False")
