"""An idle operator sends no write requests, and it says what it is doing on /metrics and /healthz.

Every resync reconciles every ModelDeployment; when nothing changed, desired state is compared with
the watch caches and nothing is written (an unchanged server-side apply would still be a request).
The API server's audit log is the witness: it records every write with the user who sent it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from modelplane.devcluster.procs import probe
from modelplane.devcluster.stages import FAULT_ANNOTATION

from tests.integration._support.cluster import Cluster
from tests.integration._support.kube import Kubectl, wait_for
from tests.integration._support.operator import OperatorProcess
from tests.integration._support.operator_checks import (
    describe_writes,
    live_nodes,
    mdep,
    metric_total,
    operator_writes,
    scrape,
    wait_condition,
    wait_ready,
    written_resources,
)

RESYNC_SECONDS = 2
RESYNCS = "modelplane_resyncs_total"
RECONCILES = "modelplane_reconciles_total"
WRITES = "modelplane_api_writes_total"
QUEUE = "modelplane_work_queue_depth"


def wait_resyncs(operator: OperatorProcess, count: int) -> dict[str, float]:
    """Wait until `count` more resyncs have fired and the work queue is empty; the samples then."""
    start = metric_total(scrape(operator.metrics_url), RESYNCS)

    def done() -> dict[str, float] | None:
        samples = scrape(operator.metrics_url)
        return samples if metric_total(samples, RESYNCS) >= start + count and samples[QUEUE] == 0 else None

    return wait_for(done, RESYNC_SECONDS * count + 30, f"{count} resyncs of the operator ({RESYNCS})")


def test_idle_resync_sends_zero_write_requests(
    operator_factory: Callable[..., OperatorProcess], cluster: Cluster, kubectl: Kubectl, namespace: str
) -> None:
    operator = operator_factory(resync_seconds=RESYNC_SECONDS, namespaces=[namespace]).start()
    audit = cluster.audit_log
    user = cluster.operator_user
    creating = audit.mark() if audit else 0

    # Every kind of steady state: ready, ready with a PDB, autoscaled (the HPA controller rewrites
    # its HPA's status every sync period), unschedulable, and crash-looping (restart counts keep changing).
    models: list[dict[str, Any]] = [
        mdep("single"),
        mdep("pair", replicas=2),
        mdep("elastic", autoscaling={"minReplicas": 1, "maxReplicas": 2}),
        mdep("waiting", gpu={"count": 64}),
    ]
    if live_nodes(kubectl).gpu:
        models.append(mdep("gpu", gpu={"count": 1}))
    if cluster.faults:
        models.append(mdep("crashing", podAnnotations={FAULT_ANNOTATION: "CrashLoopBackOff"}))
    kubectl.apply(models, namespace)
    for model in models:
        name = model["metadata"]["name"]
        if name == "waiting":
            wait_condition(kubectl, namespace, name, "Ready", "False", reason="Unschedulable")
        elif name == "crashing":
            wait_condition(kubectl, namespace, name, "Ready", "False", reason="CrashLoopBackOff")
        else:
            wait_ready(kubectl, namespace, name)

    # The detector can fail: while creating, the operator wrote, and the audit log shows it.
    if audit is not None:
        written = written_resources(operator_writes(audit, user, creating, namespace))
        expected = {
            "deployments",
            "services",
            "poddisruptionbudgets",
            "horizontalpodautoscalers",
            "modeldeployments/status",
            "events",
        }
        assert expected <= written, f"the audit log misses the operator's writes while creating: {written}"

    # Let any last reconcile of the final state finish, then watch a window of three resyncs.
    wait_resyncs(operator, 1)
    since = audit.mark() if audit else 0
    before = scrape(operator.metrics_url)
    after = wait_resyncs(operator, 3)

    reconciled = metric_total(after, RECONCILES) - metric_total(before, RECONCILES)
    assert reconciled >= 2 * len(models), f"only {reconciled} reconciles in the window: did it resync?"
    if audit is not None:
        writes = operator_writes(audit, user, since)
        assert not writes, f"{len(writes)} write requests by {user} while idle:\n{describe_writes(writes)}"
    assert metric_total(after, WRITES) == metric_total(before, WRITES), (
        "the operator's own write counter rose while idle"
    )
    if audit is None:
        pytest.skip("this cluster has no audit log: only the operator's own write counter was checked")


def test_metrics_and_liveness_endpoints_answer(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(mdep("observed"), namespace)
    wait_ready(kubectl, namespace, "observed")

    healthy, body = probe(operator.liveness_url)
    assert healthy, body
    assert "queue" in json.loads(body), body  # Kopf's liveness endpoint runs our probe

    samples = scrape(operator.metrics_url)
    for name in (RECONCILES, WRITES, QUEUE, "modelplane_reconcile_duration_seconds_count"):
        assert name in samples or any(k.startswith(name + "{") for k in samples), f"{name} missing"
    assert samples['modelplane_reconciles_total{result="ok"}'] > 0
    assert samples['modelplane_api_writes_total{kind="Deployment",verb="apply"}'] > 0
    assert samples["modelplane_model_deployments"] >= 1
    assert samples["modelplane_model_deployments_ready"] >= 1
