"""Running the server: three listeners on one event loop, model loading, and the SIGTERM drain.

Ports open first and models load behind them, so liveness answers at once while readiness waits
for every model to be loaded and warmed. On SIGTERM (or SIGINT): readiness turns false, the
listening sockets close (new connections are refused, new requests on open connections get 503
or UNAVAILABLE), in-flight requests finish, and the process exits 0 — or 1 if the drain
deadline passed with requests still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.grpc_server import GrpcServer
from modelplane_runtime.http_server import InferenceHttpServer, MetricsHttpServer
from modelplane_runtime.models import ModelRegistry
from modelplane_runtime.options import ServeOptions

log = logging.getLogger("modelplane.runtime")


async def serve(options: ServeOptions) -> int:
    loop = asyncio.get_running_loop()
    registry = ModelRegistry(options)
    http = InferenceHttpServer(registry, options)
    metrics = MetricsHttpServer(registry, options)
    grpc_server = GrpcServer(registry, options)
    try:
        await http.start(options.host, options.http_port)
        await grpc_server.start()
        await metrics.start(options.host, options.metrics_port)
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        await http.close()
        await metrics.close()
        return 1
    log.info(
        "listening on %s: HTTP %d, gRPC %d, metrics %d; auth %s; device %s, %d torch thread(s)",
        options.host,
        options.http_port,
        options.grpc_port,
        options.metrics_port,
        "bearer token" if options.auth_token else "off",
        options.device,
        options.threads,
    )

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    loading = asyncio.ensure_future(registry.load_initial())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        error = loading.exception()
        if error is not None:
            if isinstance(error, ModelLoadError):
                log.error("model loading failed: %s", error)
            else:
                log.error("model loading failed", exc_info=error)
            stopping.cancel()
            await _shutdown(http, metrics, grpc_server, registry, 0.0)
            return 1
        names = ", ".join(f"{m.name} v{m.version}" for m in registry.all_models())
        log.info("ready: serving %s", names)
    await stopping
    if not loading.done():
        loading.cancel()
    return await _drain(options, http, metrics, grpc_server, registry)


async def _drain(
    options: ServeOptions,
    http: InferenceHttpServer,
    metrics: MetricsHttpServer,
    grpc_server: GrpcServer,
    registry: ModelRegistry,
) -> int:
    started = time.perf_counter()
    log.info(
        "shutting down: draining %d HTTP and %d gRPC request(s) in flight (up to %.0f s)",
        http.in_flight,
        grpc_server.servicer.in_flight,
        options.drain_seconds,
    )
    registry.draining = True
    http.stop_accepting()
    grpc_stopped = asyncio.ensure_future(grpc_server.stop(options.drain_seconds))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(http.wait_idle(), options.drain_seconds)
    await grpc_stopped
    leftover = http.in_flight + grpc_server.servicer.in_flight
    await _shutdown(http, metrics, grpc_server, registry, 1.0)
    if leftover:
        log.warning("drain deadline passed with %d request(s) unfinished; exiting", leftover)
        return 1
    log.info("drained in %.2f s; exiting", time.perf_counter() - started)
    return 0


async def _shutdown(
    http: InferenceHttpServer,
    metrics: MetricsHttpServer,
    grpc_server: GrpcServer,
    registry: ModelRegistry,
    grace_s: float,
) -> None:
    await grpc_server.stop(0)
    await http.close()
    await metrics.close()
    await registry.close(grace_s)
