"""`modelplane operator`: run the ModelDeployment operator against KUBECONFIG or the in-cluster config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys

from modelplane import __version__
from modelplane.commands.render import IMAGE_ENV, render_options_from_env
from modelplane.kube.client import connect
from modelplane.reconcile.metrics import Metrics
from modelplane.reconcile.operator import OperatorConfig, run
from modelplane.reconcile.peering import DEFAULT_LIFETIME, MIN_LIFETIME, start_priority

RESYNC_ENV = "MODELPLANE_RESYNC_SECONDS"
DEFAULT_RESYNC_SECONDS = 60.0
POD_NAME_ENV = "POD_NAME"
EXIT_STOOD_DOWN = 3  # the active replica gave way to another (peering)


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _lifetime(text: str) -> int:
    value = int(text)
    if value < MIN_LIFETIME:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_LIFETIME} (Kopf renews keep-alives 5-10 s before they expire), got {text}"
        )
    return value


def default_identity() -> str:
    """HOSTNAME/PID: the pod's name in a pod (stable when its container restarts), unique on one host."""
    return f"{socket.gethostname()}/{os.getpid()}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="modelplane operator",
        description="Run the ModelDeployment operator (all namespaces unless --namespace is given). "
        f"The default runtime image comes from ${IMAGE_ENV}.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="serve only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--liveness", metavar="URL", help="Kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve the operator's Prometheus metrics on this port (0: off)",
    )
    env_resync = os.environ.get(RESYNC_ENV)
    parser.add_argument(
        "--resync-seconds",
        type=_positive_float,
        default=_positive_float(env_resync) if env_resync else DEFAULT_RESYNC_SECONDS,
        help=f"reconcile every ModelDeployment this often even without events (env {RESYNC_ENV}; "
        f"default {DEFAULT_RESYNC_SECONDS:g}; 0: off)",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="use Kopf peering with this name (for several operator replicas): one replica reconciles, "
        "the others stand by; default: standalone",
    )
    parser.add_argument(
        "--peering-identity",
        metavar="ID",
        default=os.environ.get(POD_NAME_ENV) or None,
        help=f"this replica's name in the peering object, unique among the replicas (env {POD_NAME_ENV}; "
        "default: HOSTNAME/PID)",
    )
    parser.add_argument(
        "--peering-priority",
        type=int,
        metavar="N",
        help="this replica's peering priority, the highest live one serves (default: from the start time, "
        "so the replica that started first serves and a restarted one never takes over from a healthy one)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=_lifetime,
        default=DEFAULT_LIFETIME,
        metavar="SECONDS",
        help=f"how long a keep-alive counts: a standby takes over within this after the active replica "
        f"stops (default {DEFAULT_LIFETIME}, at least {MIN_LIFETIME})",
    )
    parser.add_argument("--workers", type=int, default=4, help="ModelDeployments reconciled in parallel")
    parser.add_argument("-v", "--verbose", action="store_true", help="log Kopf's own activity too")
    args = parser.parse_args(argv)
    if args.peering:
        patterns = [n for n in args.namespace if any(c in n for c in "*?[!")]
        if patterns:
            parser.error(f"--peering needs literal namespaces (one peering object each), got {patterns}")
    return args


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    # Kopf logs every handler run at INFO, the HTTP clients every request; keep their warnings and
    # errors unless asked.
    if not verbose:
        for name in ("kopf", "httpx2", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    metrics = Metrics()
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=metrics.registry)
    config = OperatorConfig(
        namespaces=tuple(args.namespace),
        resync_seconds=args.resync_seconds,
        default_image=render_options_from_env().default_image,
        liveness_endpoint=args.liveness,
        peering=args.peering,
        peering_identity=args.peering_identity or default_identity(),
        peering_priority=start_priority() if args.peering_priority is None else args.peering_priority,
        peering_lifetime=args.peering_lifetime,
        workers=max(1, args.workers),
    )
    logging.getLogger("modelplane.operator").info("modelplane operator %s starting", __version__)
    try:
        kube = connect(on_write=metrics.count_write)
    except Exception as exc:
        print(f"modelplane operator: no Kubernetes credentials: {exc}", file=sys.stderr)
        return 1
    demoted = False
    with contextlib.suppress(KeyboardInterrupt):
        demoted = asyncio.run(run(config, kube, metrics))
    # A replica that stood down exits non-zero: its pod restarts it, and it stands by afresh.
    return EXIT_STOOD_DOWN if demoted else 0
