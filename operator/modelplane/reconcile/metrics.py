"""The operator's own Prometheus metrics (served by `modelplane operator --metrics-port`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reconciles = Counter(
            "modelplane_reconciles_total",
            "ModelDeployment reconciles, by result (ok, error).",
            ["result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "modelplane_reconcile_errors_total",
            "Reconciles that raised an unexpected error (retried with backoff).",
            registry=self.registry,
        )
        self.duration = Histogram(
            "modelplane_reconcile_duration_seconds",
            "Time one reconcile took.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.resyncs = Counter(
            "modelplane_resyncs_total",
            "Periodic resyncs: every ModelDeployment queued again without an event.",
            registry=self.registry,
        )
        self.writes = Counter(
            "modelplane_api_writes_total",
            "Write requests sent to the API server, by verb and kind (zero while idle).",
            ["verb", "kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelplane_work_queue_depth",
            "ModelDeployments waiting to be reconciled.",
            registry=self.registry,
        )
        self.managed = Gauge(
            "modelplane_model_deployments",
            "ModelDeployments the operator currently sees.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "modelplane_model_deployments_ready", "ModelDeployments with Ready=True.", registry=self.registry
        )
        self.active = Gauge(
            "modelplane_operator_active",
            "1 while this replica reconciles; 0 while it stands by for another (Kopf peering).",
            registry=self.registry,
        )

    def count_write(self, verb: str, kind: str) -> None:
        self.writes.labels(verb=verb, kind=kind).inc()
