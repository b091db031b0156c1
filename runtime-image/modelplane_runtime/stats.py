"""Per-model statistics: one set of counters feeds Triton's statistics API and the Prometheus text.

Counters are plain ints mutated only on the event loop thread, so the hot path takes no lock and
calls no metrics library; the Prometheus exposition is rendered from them when scraped.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from tritonclient.grpc import service_pb2


class ModelStats:
    __slots__ = (
        "batches",
        "compute_infer_ns",
        "compute_input_ns",
        "compute_output_ns",
        "executed_requests",
        "execution_count",
        "fail_count",
        "fail_ns",
        "fail_reasons",
        "inference_count",
        "last_inference_ms",
        "pending",
        "queue_ns",
        "success_count",
        "success_ns",
    )

    def __init__(self) -> None:
        self.success_count = 0
        self.success_ns = 0
        self.fail_count = 0
        self.fail_ns = 0
        self.fail_reasons: dict[str, int] = {}
        self.executed_requests = 0  # requests whose batch ran (for queue/compute counts)
        self.queue_ns = 0
        self.compute_input_ns = 0
        self.compute_infer_ns = 0
        self.compute_output_ns = 0
        self.inference_count = 0  # rows: each item of a batched request counts, as in Triton
        self.execution_count = 0  # model executions (batches)
        self.last_inference_ms = 0
        self.pending = 0  # requests queued, not yet executing: the autoscaling signal
        # batch size (rows) -> [executions, compute_input ns, compute_infer ns, compute_output ns]
        self.batches: dict[int, list[int]] = {}

    def succeeded(self, duration_ns: int, rows: int) -> None:
        self.success_count += 1
        self.success_ns += duration_ns
        self.inference_count += rows

    def failed(self, duration_ns: int, reason: str) -> None:
        self.fail_count += 1
        self.fail_ns += duration_ns
        self.fail_reasons[reason] = self.fail_reasons.get(reason, 0) + 1

    def executed(
        self, rows: int, requests: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One model execution of `requests` requests holding `rows` rows together."""
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.executed_requests += requests
        self.queue_ns += queue_ns
        # Triton charges each request in a batch with the batch's compute time.
        self.compute_input_ns += input_ns * requests
        self.compute_infer_ns += infer_ns * requests
        self.compute_output_ns += output_ns * requests
        entry = self.batches.get(rows)
        if entry is None:
            entry = self.batches[rows] = [0, 0, 0, 0]
        entry[0] += 1
        entry[1] += input_ns
        entry[2] += infer_ns
        entry[3] += output_ns

    def to_json(self, name: str, version: str) -> dict[str, Any]:
        """One entry of `model_stats` in Triton's HTTP statistics response."""

        def duration(count: int, ns: int) -> dict[str, int]:
            return {"count": count, "ns": ns}

        executed = self.executed_requests
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": duration(self.success_count, self.success_ns),
                "fail": duration(self.fail_count, self.fail_ns),
                "queue": duration(executed, self.queue_ns),
                "compute_input": duration(executed, self.compute_input_ns),
                "compute_infer": duration(executed, self.compute_infer_ns),
                "compute_output": duration(executed, self.compute_output_ns),
                "cache_hit": duration(0, 0),
                "cache_miss": duration(0, 0),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": duration(entry[0], entry[1]),
                    "compute_infer": duration(entry[0], entry[2]),
                    "compute_output": duration(entry[0], entry[3]),
                }
                for size, entry in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }

    def to_proto(self, name: str, version: str) -> Any:
        document = self.to_json(name, version)
        message = service_pb2.ModelStatistics(
            name=name,
            version=version,
            last_inference=document["last_inference"],
            inference_count=document["inference_count"],
            execution_count=document["execution_count"],
        )
        for key, value in document["inference_stats"].items():
            getattr(message.inference_stats, key).CopyFrom(service_pb2.StatisticDuration(**value))
        for batch in document["batch_stats"]:
            message.batch_stats.append(
                service_pb2.InferBatchStatistics(
                    batch_size=batch["batch_size"],
                    compute_input=service_pb2.StatisticDuration(**batch["compute_input"]),
                    compute_infer=service_pb2.StatisticDuration(**batch["compute_infer"]),
                    compute_output=service_pb2.StatisticDuration(**batch["compute_output"]),
                )
            )
        return message


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# name, type, help, how to read it from ModelStats
_FAMILIES: list[tuple[str, str, str]] = [
    ("nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "counter", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)"),
    (
        "nv_inference_exec_count",
        "counter",
        "Number of model executions performed (does not include cached requests)",
    ),
    (
        "nv_inference_pending_request_count",
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
    ),
    (
        "nv_inference_request_duration_us",
        "counter",
        "Cumulative inference request duration in microseconds (includes cached requests)",
    ),
    (
        "nv_inference_queue_duration_us",
        "counter",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
    ),
    (
        "nv_inference_compute_input_duration_us",
        "counter",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "counter",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
    ),
    (
        "nv_inference_compute_output_duration_us",
        "counter",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
    ),
]

FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


def render_prometheus(models: list[tuple[str, str, ModelStats]]) -> str:
    """Triton's metric names, types and labels (`model`, `version`) in Prometheus text format."""
    lines: list[str] = []
    for metric, kind, help_text in _FAMILIES:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        for name, version, stats in models:
            labels = f'model="{_escape(name)}",version="{_escape(version)}"'
            if metric == "nv_inference_request_failure":
                for reason in FAILURE_REASONS:
                    count = stats.fail_reasons.get(reason, 0)
                    lines.append(f'{metric}{{{labels},reason="{reason}"}} {count}')
                continue
            value = {
                "nv_inference_request_success": stats.success_count,
                "nv_inference_count": stats.inference_count,
                "nv_inference_exec_count": stats.execution_count,
                "nv_inference_pending_request_count": stats.pending,
                "nv_inference_request_duration_us": (stats.success_ns + stats.fail_ns) // 1000,
                "nv_inference_queue_duration_us": stats.queue_ns // 1000,
                "nv_inference_compute_input_duration_us": stats.compute_input_ns // 1000,
                "nv_inference_compute_infer_duration_us": stats.compute_infer_ns // 1000,
                "nv_inference_compute_output_duration_us": stats.compute_output_ns // 1000,
            }[metric]
            lines.append(f"{metric}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"


def render_gpu_metrics() -> str:
    """nv_gpu_utilization and nv_gpu_memory_{total,used}_bytes per device; empty without CUDA."""
    try:
        import torch
    except ImportError:
        return ""
    if not torch.cuda.is_available():
        return ""
    rows: list[tuple[str, str, float]] = []
    for index in range(torch.cuda.device_count()):
        uuid = f"GPU-{torch.cuda.get_device_properties(index).uuid}"
        free, total = torch.cuda.mem_get_info(index)
        rows.append(("nv_gpu_memory_total_bytes", uuid, float(total)))
        rows.append(("nv_gpu_memory_used_bytes", uuid, float(total - free)))
        # Utilization reads NVML (nvidia-ml-py, a runtime dependency); the memory figures stand on their own.
        with contextlib.suppress(Exception):
            rows.append(("nv_gpu_utilization", uuid, torch.cuda.utilization(index) / 100.0))
    helps = {
        "nv_gpu_utilization": "GPU utilization rate [0.0 - 1.0)",
        "nv_gpu_memory_total_bytes": "GPU total memory, in bytes",
        "nv_gpu_memory_used_bytes": "GPU used memory, in bytes",
    }
    lines: list[str] = []
    for metric, help_text in helps.items():
        samples = [r for r in rows if r[0] == metric]
        if not samples:
            continue
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [f'{metric}{{gpu_uuid="{uuid}"}} {value}' for _, uuid, value in samples]
    return "\n".join(lines) + ("\n" if lines else "")
