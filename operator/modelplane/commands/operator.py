"""`modelplane operator`: run the ModelDeployment operator against KUBECONFIG or the in-cluster config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

from modelplane import __version__
from modelplane.commands.render import IMAGE_ENV, render_options_from_env
from modelplane.kube.client import connect
from modelplane.reconcile.metrics import Metrics
from modelplane.reconcile.operator import OperatorConfig, run

RESYNC_ENV = "MODELPLANE_RESYNC_SECONDS"
DEFAULT_RESYNC_SECONDS = 60.0


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


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
        help="use Kopf peering with this name (for several operator replicas); default: standalone",
    )
    parser.add_argument("--workers", type=int, default=4, help="ModelDeployments reconciled in parallel")
    parser.add_argument("-v", "--verbose", action="store_true", help="log Kopf's own activity too")
    return parser.parse_args(argv)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    # Kopf logs every handler run at INFO; keep its warnings and errors unless asked.
    if not verbose:
        # Kopf logs every handler run at INFO, the HTTP clients every request; keep their warnings.
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
        workers=max(1, args.workers),
    )
    logging.getLogger("modelplane.operator").info("modelplane operator %s starting", __version__)
    try:
        kube = connect(on_write=metrics.count_write)
    except Exception as exc:
        print(f"modelplane operator: no Kubernetes credentials: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config, kube, metrics))
    return 0
