"""Run the local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.

Everything binds 127.0.0.1 on free ports and lives in one state folder (default ``.devcluster/``):
PKI, kubeconfigs, logs, the audit log, etcd's data and ``state.json``, which records each process
(pid, executable, start time) so that ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelplane.devcluster import build, manifests, nodes, pki, stages
from modelplane.devcluster.kubeapi import Api, ApiError
from modelplane.devcluster.paths import OPERATOR_RULES
from modelplane.devcluster.procs import Proc, free_ports, is_ours, probe, spawn, stop, tail

STATE_FILE = "state.json"
STATE_VERSION = 1
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Folders and files `up` may recreate in the state folder; nothing else there is ever deleted.
_OWNED = ("pki", "logs", "etcd-data", "kubeconfigs", "run", "admin.kubeconfig", "operator.kubeconfig",
          "audit.log", "audit-policy.yaml", "kwok.yaml", STATE_FILE)  # fmt: skip
POD_CIDR = "10.244.0.0/16"


class DevclusterError(RuntimeError):
    """Something the user can act on; the message says what and where to look."""


@dataclass(frozen=True)
class Layout:
    """Where things live inside the state folder (pure: no I/O)."""

    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def keys(self) -> pki.Pki:
        return pki.Pki(self.dir / "pki")

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.dir / "etcd-data"

    @property
    def kubeconfigs(self) -> Path:
        return self.dir / "kubeconfigs"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.dir / "operator.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    @property
    def audit_policy(self) -> Path:
        return self.dir / "audit-policy.yaml"

    @property
    def kwok_config(self) -> Path:
        return self.dir / "kwok.yaml"

    def component_kubeconfig(self, identity: pki.Identity) -> Path:
        return self.kubeconfigs / f"{identity.file}.kubeconfig"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def run_dir(self, name: str) -> Path:
        return self.dir / "run" / name


@dataclass
class State:
    """What state.json records."""

    dir: Path
    server: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "server": self.server,
            "versions": self.versions,
            "created": self.created,
            "procs": [p.to_json() for p in self.procs],
        }

    def proc(self, name: str) -> Proc | None:
        return next((p for p in self.procs if p.name == name), None)


@dataclass(frozen=True)
class ClusterInfo:
    """What a user or a test needs to talk to a running devcluster."""

    dir: Path
    server: str
    admin_kubeconfig: Path
    operator_kubeconfig: Path
    audit_log: Path
    versions: Mapping[str, str]


def load_state(dir: Path) -> State | None:
    path = Layout(dir).state
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DevclusterError(
            f"{path} is not valid JSON ({error}); remove it if no devcluster is running"
        ) from error
    if data.get("version") != STATE_VERSION:
        raise DevclusterError(f"{path} has state version {data.get('version')!r}, expected {STATE_VERSION}")
    return State(
        dir=dir,
        server=data.get("server", ""),
        versions=dict(data.get("versions", {})),
        procs=[Proc.from_json(p) for p in data.get("procs", [])],
        created=float(data.get("created", 0)),
    )


def save_state(state: State) -> None:
    path = Layout(state.dir).state
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    partial.replace(path)


def info(state: State) -> ClusterInfo:
    layout = Layout(state.dir)
    return ClusterInfo(
        state.dir,
        state.server,
        layout.admin_kubeconfig,
        layout.operator_kubeconfig,
        layout.audit_log,
        state.versions,
    )


def _insecure() -> ssl.SSLContext:
    """For the controller-manager's and scheduler's self-signed health endpoints only."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _admin_context(layout: Layout) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(layout.keys.ca_cert))
    context.load_cert_chain(str(layout.keys.cert(pki.ADMIN)), str(layout.keys.key(pki.ADMIN)))
    return context


def health(layout: Layout, proc: Proc) -> tuple[bool, str]:
    """Probe a component's health URL with the right TLS settings."""
    if not proc.health:
        return is_ours(proc), "no health endpoint"
    context = None
    if proc.health.startswith("https://"):
        context = _admin_context(layout) if proc.name == "kube-apiserver" else _insecure()
    return probe(proc.health, context)


def _wait(
    describe: str, check: Callable[[], tuple[bool, str]], timeout: float, proc: Proc | None = None
) -> None:
    """Poll ``check`` until it passes; fail early, with the log's tail, if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    delay, detail = 0.05, ""
    while True:
        ok, detail = check()
        if ok:
            return
        if proc is not None and not is_ours(proc):
            raise DevclusterError(f"{proc.name} exited while {describe}; log {proc.log}:\n{tail(proc.log)}")
        if time.monotonic() > deadline:
            where = f"; log {proc.log}:\n{tail(proc.log)}" if proc else ""
            raise DevclusterError(f"timed out after {timeout:.0f}s {describe} (last: {detail}){where}")
        time.sleep(delay)  # the poll interval of a wait-for-condition loop
        delay = min(delay * 2, 1.0)


def _kube_component_flags(name: str, identity: pki.Identity, layout: Layout, port: int) -> list[str]:
    """The flags kube-controller-manager and kube-scheduler share: identity, serving, no leader election."""
    kubeconfig = layout.component_kubeconfig(identity)
    return [
        f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={port}",
        f"--cert-dir={layout.run_dir(name)}",
    ]  # fmt: skip


def component_argv(
    name: str, binary: Path, layout: Layout, ports: Mapping[str, int]
) -> tuple[list[str], str]:
    """The command line and health URL of one component (pure: no I/O)."""
    p = layout.keys
    api = f"https://127.0.0.1:{ports['kube-apiserver']}"
    if name == "etcd":
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        argv = [
            "--name=default", f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}", "--unsafe-no-fsync", "--log-level=warn",
        ]  # fmt: skip
        return [str(binary), *argv], f"{client}/health"
    if name == "kube-apiserver":
        argv = [
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['kube-apiserver']}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--cert-dir={layout.run_dir(name)}",
            f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}", f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={pki.SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC", "--allow-privileged=true", "--profiling=false",
            f"--audit-policy-file={layout.audit_policy}", f"--audit-log-path={layout.audit_log}",
            "--audit-log-maxsize=0", "--audit-log-maxbackup=0",
        ]  # fmt: skip
        return [str(binary), *argv], f"{api}/readyz"
    if name == "kube-controller-manager":
        argv = [
            *_kube_component_flags(name, pki.CONTROLLER_MANAGER, layout, ports[name]),
            f"--service-account-private-key-file={p.sa_key}", f"--root-ca-file={p.ca_cert}",
            "--use-service-account-credentials=false",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            # An HPA's first sync (its conditions, scaling up to minReplicas) waits a whole period
            # after its creation; 5 s instead of 15 s keeps that wait short on a dev cluster.
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--profiling=false",
        ]  # fmt: skip
        return [str(binary), *argv], f"https://127.0.0.1:{ports[name]}/healthz"
    if name == "kube-scheduler":
        argv = [*_kube_component_flags(name, pki.SCHEDULER, layout, ports[name]), "--profiling=false"]
        return [str(binary), *argv], f"https://127.0.0.1:{ports[name]}/healthz"
    if name == "kwok":
        argv = [
            f"--kubeconfig={layout.component_kubeconfig(pki.KWOK)}", f"--config={layout.kwok_config}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={nodes.KWOK_ANNOTATION}=fake",
            "--node-lease-duration-seconds=40", f"--cidr={POD_CIDR}",
            f"--server-address=127.0.0.1:{ports[name]}",
        ]  # fmt: skip
        return [str(binary), *argv], f"http://127.0.0.1:{ports[name]}/healthz"
    raise ValueError(f"unknown component {name!r}")


def _prepare_dir(dir: Path) -> None:
    """Make sure ``dir`` is ours (or empty) and clear what a previous run left."""
    if dir.exists() and not dir.is_dir():
        raise DevclusterError(f"--dir {dir} exists and is not a folder")
    dir.mkdir(parents=True, exist_ok=True)
    entries = {entry.name for entry in dir.iterdir()}
    if entries and STATE_FILE not in entries and not entries <= set(_OWNED):
        raise DevclusterError(
            f"--dir {dir} is not empty and holds no devcluster ({STATE_FILE} is missing); "
            "choose an empty or new folder"
        )
    for name in _OWNED:
        path = dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _running_state(dir: Path) -> State | None:
    """The state of a devcluster in ``dir`` whose processes are all alive, else None.

    Raises when some recorded processes are alive and others are not: that needs `down` first.
    """
    state = load_state(dir)
    if state is None:
        return None
    cluster = [p for p in state.procs if p.name in COMPONENTS]
    alive = [p for p in cluster if is_ours(p)]
    if cluster and len(alive) == len(cluster):
        return state
    if alive:
        names = ", ".join(p.name for p in alive)
        raise DevclusterError(
            f"the devcluster in {dir} is partly running ({names} alive, others gone); "
            f"run `modelplane devcluster down --dir {dir}` first"
        )
    return None


def find_running(dir: Path) -> ClusterInfo | None:
    """The running devcluster in ``dir``, if any."""
    try:
        state = _running_state(dir)
    except DevclusterError:
        return None
    return info(state) if state else None


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def up(dir: Path, *, quiet: bool = False, timeout: float = 120) -> ClusterInfo:
    """Start the control plane in ``dir`` (or say it already runs) and return how to reach it."""
    dir = dir.expanduser().resolve()
    running = _running_state(dir)
    layout = Layout(dir)
    if running is not None:
        _log(f"devcluster already running in {dir}", quiet)
        return info(running)
    rules = manifests.load_rules(OPERATOR_RULES)  # a bad rules file fails before anything starts
    started = time.monotonic()
    built = build.build(quiet=True)
    _prepare_dir(dir)
    for folder in (layout.logs, layout.kubeconfigs, layout.etcd_data):
        folder.mkdir(parents=True, exist_ok=True)
    layout.etcd_data.chmod(0o700)
    _log(f"==> starting the devcluster in {dir}", quiet)
    keys = pki.generate(layout.keys.dir)
    port_names = ("etcd", "etcd-peer", *COMPONENTS[1:])
    ports = dict(zip(port_names, free_ports(len(port_names)), strict=True))
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    pki.write_kubeconfig(layout.admin_kubeconfig, keys, pki.ADMIN, server)
    pki.write_kubeconfig(layout.operator_kubeconfig, keys, pki.OPERATOR, server)
    for identity in (pki.CONTROLLER_MANAGER, pki.SCHEDULER, pki.KWOK):
        pki.write_kubeconfig(layout.component_kubeconfig(identity), keys, identity, server)
    layout.audit_policy.write_text(yaml.safe_dump(manifests.audit_policy(), sort_keys=False))
    stages.write_kwok_config(layout.kwok_config, built["kwok"].files_dir)

    state = State(dir, server, {name: built[name].version for name in COMPONENTS}, [], time.time())
    save_state(state)
    api = Api(server, keys.ca_cert, keys.cert(pki.ADMIN), keys.key(pki.ADMIN))
    try:
        for name in COMPONENTS:
            argv, health_url = component_argv(name, built[name].binary, layout, ports)
            layout.run_dir(name).mkdir(parents=True, exist_ok=True)
            proc = spawn(
                name, argv, layout.log(name), cwd=layout.run_dir(name), port=ports[name], health=health_url
            )
            state.procs.append(proc)
            save_state(state)
            _wait(
                f"waiting for {name} to be healthy ({health_url})",
                functools.partial(health, layout, proc),
                timeout,
                proc,
            )
            _log(
                f"    {name} {built[name].version}: healthy on 127.0.0.1:{ports[name]} (pid {proc.pid})",
                quiet,
            )
            if name == "kube-apiserver":
                for obj in manifests.operator_rbac(rules, manifests.user_subject()):
                    api.apply(obj)
                for node in nodes.NODES:
                    api.create_node(node.manifest())
        _wait("waiting for the fake nodes to be Ready", lambda: _nodes_ready(api), timeout)
        _wait("waiting for the default ServiceAccount", lambda: _default_service_account(api), timeout)
    except BaseException:
        for proc in reversed(state.procs):
            stop(proc)
        state.procs.clear()
        save_state(state)
        raise
    _log(
        f"==> devcluster up in {time.monotonic() - started:.1f}s: {len(nodes.NODES)} fake nodes, API at {server}",
        quiet,
    )
    return info(state)


def _nodes_ready(api: Api) -> tuple[bool, str]:
    try:
        items = api.get("/api/v1/nodes")["items"]
    except (ApiError, OSError) as error:
        return False, str(error)
    ready = {
        item["metadata"]["name"]
        for item in items
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in item.get("status", {}).get("conditions", [])
        )
    }
    missing = sorted({n.name for n in nodes.NODES} - ready)
    return not missing, f"not Ready yet: {', '.join(missing)}"


def _default_service_account(api: Api) -> tuple[bool, str]:
    """Pods are admitted only once their namespace's ServiceAccount exists (as in any cluster)."""
    try:
        api.get("/api/v1/namespaces/default/serviceaccounts/default")
    except (ApiError, OSError) as error:
        return False, str(error)
    return True, ""


def down(dir: Path, *, quiet: bool = False) -> list[tuple[str, int, str]]:
    """Stop every process recorded in ``dir`` (newest first); returns (name, pid, outcome)."""
    dir = dir.expanduser().resolve()
    state = load_state(dir)
    if state is None:
        _log(f"no devcluster in {dir}", quiet)
        return []
    results = []
    for proc in reversed(state.procs):
        outcome = stop(proc)
        results.append((proc.name, proc.pid, outcome))
        _log(f"    {proc.name} (pid {proc.pid}): {outcome}", quiet)
    Layout(dir).state.unlink(missing_ok=True)
    _log(f"==> devcluster in {dir} stopped (logs kept in {Layout(dir).logs})", quiet)
    return results


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    running: bool
    healthy: bool
    detail: str
    port: int
    log: str


def status(dir: Path) -> tuple[State | None, list[ComponentStatus]]:
    dir = dir.expanduser().resolve()
    state = load_state(dir)
    if state is None:
        return None, []
    layout = Layout(dir)
    rows = []
    for proc in state.procs:
        running = is_ours(proc)
        healthy, detail = health(layout, proc) if running else (False, "not running")
        rows.append(ComponentStatus(proc.name, proc.pid, running, healthy, detail, proc.port, proc.log))
    return state, rows


def env_lines(cluster: ClusterInfo) -> list[str]:
    return [
        f"export KUBECONFIG={cluster.admin_kubeconfig}",
        f"export MODELPLANE_OPERATOR_KUBECONFIG={cluster.operator_kubeconfig}",
        f"export MODELPLANE_AUDIT_LOG={cluster.audit_log}",
    ]


def add_proc(dir: Path, proc: Proc) -> None:
    """Record a process started beside the cluster (the operator of `make up`), so down stops it too."""
    state = load_state(dir)
    if state is None:
        raise DevclusterError(f"no devcluster in {dir}")
    state.procs = [p for p in state.procs if p.name != proc.name] + [proc]
    save_state(state)


def remove_proc(dir: Path, name: str) -> Proc | None:
    state = load_state(dir)
    if state is None:
        return None
    proc = state.proc(name)
    state.procs = [p for p in state.procs if p.name != name]
    save_state(state)
    return proc


@contextmanager
def running(dir: Path, *, quiet: bool = True) -> Iterator[ClusterInfo]:
    """A devcluster for the duration of a ``with`` block (stopped even on errors)."""
    cluster = up(dir, quiet=quiet)
    try:
        yield cluster
    finally:
        down(dir, quiet=quiet)


def wait_healthy(dir: Path, name: str, timeout: float) -> None:
    """Wait for a recorded process's health URL to answer 200."""
    state = load_state(dir)
    proc = state.proc(name) if state else None
    if proc is None:
        raise DevclusterError(f"no process named {name} in {dir}")
    _wait(
        f"waiting for {name} to be healthy ({proc.health})", lambda: health(Layout(dir), proc), timeout, proc
    )


def environ_with(values: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **values}


def versions_text(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def describe(rows: Sequence[ComponentStatus]) -> list[str]:
    """The table `status` prints."""
    lines = [f"{'COMPONENT':<24} {'PID':>7}  {'PORT':>5}  {'HEALTH':<9} LOG"]
    for row in rows:
        state = "healthy" if row.healthy else ("running" if row.running else "stopped")
        lines.append(f"{row.name:<24} {row.pid:>7}  {row.port:>5}  {state:<9} {row.log}")
        if row.running and not row.healthy:
            lines.append(f"{'':<24} {'':>7}  {'':>5}  {row.detail}")
    return lines
