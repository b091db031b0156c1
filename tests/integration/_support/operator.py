"""The operator as a separate process with its own identity, which a test can start, kill, restart."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from modelplane.devcluster import operatorproc
from modelplane.devcluster.procs import Proc, free_ports, is_ours, probe, spawn, stop, tail

from tests.integration._support.cluster import Cluster
from tests.integration._support.kube import wait_for

RUNTIME_IMAGE = "ghcr.io/modelplane/runtime:test"
DEFAULT_RESYNC_SECONDS = 10


class OperatorProcess:
    """One `modelplane operator` process (restartable; every start appends to the same log)."""

    def __init__(
        self,
        cluster: Cluster,
        log: Path,
        *,
        resync_seconds: int | None = DEFAULT_RESYNC_SECONDS,
        namespaces: Sequence[str] = (),
        peering: str | None = None,
        extra_args: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.log = log
        self.resync_seconds = resync_seconds
        self.namespaces = tuple(namespaces)
        self.peering = peering
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(extra_env or {})
        self.proc: Proc | None = None
        self.liveness_url = ""
        self.metrics_port = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and is_ours(self.proc)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60) -> OperatorProcess:
        """Start and wait until the liveness endpoint answers 200 (fails with the log if it exits)."""
        if self.running:
            return self
        executable = operatorproc.check_available()
        liveness, self.metrics_port = free_ports(2)
        self.liveness_url = operatorproc.liveness_url(liveness)
        argv = operatorproc.operator_argv(
            executable,
            liveness_port=liveness,
            metrics_port=self.metrics_port,
            resync_seconds=self.resync_seconds,
            namespaces=self.namespaces,
            peering=self.peering,
            extra=self.extra_args,
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.operator_kubeconfig),
            "MODELPLANE_RUNTIME_IMAGE": RUNTIME_IMAGE,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as handle:
            handle.write(f"\n===== starting: {' '.join(argv)}\n")
        self.proc = spawn("operator", argv, self.log, cwd=self.log.parent, env=env, health=self.liveness_url)

        def alive_and_live() -> bool:
            if not self.running:
                raise AssertionError(
                    f"the operator exited during start-up; log {self.log}:\n{self.log_tail()}"
                )
            return probe(self.liveness_url)[0]

        try:
            wait_for(alive_and_live, timeout, f"the operator's liveness endpoint {self.liveness_url}")
        except AssertionError as error:
            self.stop()
            raise AssertionError(f"{error}\noperator log {self.log}:\n{self.log_tail()}") from error
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill without a chance to clean up (a crash), and wait until it is gone."""
        if not self.running or self.proc is None:
            return
        os.kill(self.proc.pid, sig)
        proc = self.proc
        wait_for(lambda: not is_ours(proc), 15, f"the operator (pid {proc.pid}) to die")
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)  # reap it: it is our child

    def stop(self) -> None:
        """Graceful stop: SIGTERM, then SIGKILL if it lingers."""
        if self.proc is not None:
            stop(self.proc)

    def restart(self, timeout: float = 60) -> OperatorProcess:
        self.stop()
        return self.start(timeout)

    def log_tail(self, lines: int = 80) -> str:
        return tail(self.log, lines)
