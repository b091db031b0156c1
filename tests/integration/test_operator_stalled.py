"""Past the progress deadline a failing model is Stalled (kstatus: Failed), and Ready keeps the cause.

The models are the session's `deadline_models`, with the smallest startup budget the API allows
(maxLoadSeconds 10: a progress deadline of 130 s), created at the session's first integration test;
these tests run last, so the deadline has passed during the others.
"""

from __future__ import annotations

import pytest

from tests.integration._support.kube import Kubectl, condition
from tests.integration._support.operator_checks import assert_condition, wait_condition
from tests.integration._support.operator_faults import STALLS, DeadlineModels


@pytest.fixture(scope="module")
def namespace(deadline_models: DeadlineModels) -> str:
    return deadline_models.namespace


@pytest.mark.parametrize("name", list(STALLS))
def test_past_the_progress_deadline_a_failing_model_is_stalled(
    kubectl: Kubectl, namespace: str, deadline_models: DeadlineModels, name: str
) -> None:
    fault = STALLS[name]
    obj = wait_condition(
        kubectl,
        namespace,
        name,
        "Stalled",
        "True",
        reason="ProgressDeadlineExceeded",
        timeout=deadline_models.time_left(),
    )
    stalled = condition(obj, "Stalled")
    assert stalled is not None
    assert "progress" in stalled["message"], stalled
    # The root cause stays in Ready; nothing is progressing any more.
    assert_condition(obj, "Ready", "False", fault.reason)
    assert fault.words in str((condition(obj, "Ready") or {}).get("message"))
    assert_condition(obj, "Reconciling", "False")
