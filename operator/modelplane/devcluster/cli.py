"""`modelplane devcluster`: build, start, inspect and stop the local control plane."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from modelplane.devcluster import build, cluster, gomod, manifests, nodes, operatorproc, stages
from modelplane.devcluster.paths import DEFAULT_STATE_DIR
from modelplane.devcluster.procs import free_ports, is_ours, spawn, stop

OPERATOR = "operator"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelplane devcluster",
        description="A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler) built from upstream Go modules, with KWOK fake GPU nodes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--dir", type=Path, default=DEFAULT_STATE_DIR,
            help=f"state folder: PKI, kubeconfigs, logs, etcd data (default {DEFAULT_STATE_DIR})",
        )  # fmt: skip
        return p

    b = sub.add_parser("build", help="build the control plane's binaries (only what is missing)")
    b.add_argument("tools", nargs="*", help=f"tools to build (default: all but on-demand); known: "
                   f"{', '.join(t.name for t in build.TOOLS)}")  # fmt: skip
    pin = sub.add_parser(
        "pin-kubernetes", help="regenerate tests/controlplane/kubernetes/go.mod for a version"
    )
    pin.add_argument("version", help="a k8s.io/kubernetes version, e.g. v1.34.10")
    up = with_dir(sub.add_parser("up", help="start the control plane and the fake nodes"))
    up.add_argument(
        "--timeout", type=float, default=120, help="seconds to wait for each component (default 120)"
    )
    with_dir(sub.add_parser("down", help="stop exactly what `up` (and start-operator) started"))
    with_dir(sub.add_parser("status", help="components, pids, ports, health, logs, kubeconfigs"))
    with_dir(sub.add_parser("env", help="print shell exports for the running devcluster"))
    k = with_dir(sub.add_parser("kubectl", help="run kubectl with the devcluster's admin kubeconfig"))
    k.add_argument("args", nargs=argparse.REMAINDER, help="kubectl arguments (after --)")
    so = with_dir(sub.add_parser("start-operator", help="run `modelplane operator` in the background"))
    so.add_argument("--resync-seconds", type=int, default=None)
    so.add_argument("--timeout", type=float, default=60, help="seconds to wait for its liveness endpoint")
    with_dir(sub.add_parser("stop-operator", help="stop the operator started by start-operator"))
    sub.add_parser("nodes", help="print the fake GPU nodes as YAML (for KWOK on another cluster, e.g. kind)")
    return parser


def _running(dir: Path) -> cluster.ClusterInfo:
    found = cluster.find_running(dir.expanduser().resolve())
    if found is None:
        raise cluster.DevclusterError(
            f"no running devcluster in {dir}; start one with `modelplane devcluster up`"
        )
    return found


def _status(dir: Path) -> int:
    state, rows = cluster.status(dir)
    if state is None:
        print(f"no devcluster in {dir.expanduser().resolve()} (start one with `modelplane devcluster up`)")
        return 1
    layout = cluster.Layout(state.dir)
    print(f"devcluster in {state.dir}")
    print(f"API server:  {state.server}")
    print(f"versions:    {cluster.versions_text(state.versions)}")
    print("\n".join(cluster.describe(rows)))
    print(f"kubeconfigs: {layout.admin_kubeconfig} (admin, system:masters)")
    print(f"             {layout.operator_kubeconfig} ({manifests.OPERATOR_USER})")
    print(f"audit log:   {layout.audit_log}")
    print(f"faults:      pod annotation {stages.FAULT_ANNOTATION} = {' | '.join(stages.FAULTS)}")
    return 0 if rows and all(r.healthy for r in rows) else 1


def _kubectl(dir: Path, args: list[str]) -> int:
    found = _running(dir)
    if args and args[0] == "--":
        args = args[1:]
    kubectl = build.find_kubectl()
    return subprocess.run(
        [str(kubectl), f"--kubeconfig={found.admin_kubeconfig}", *args], check=False
    ).returncode


def _start_operator(dir: Path, resync_seconds: int | None, timeout: float) -> int:
    found = _running(dir)
    executable = operatorproc.check_available()
    state = cluster.load_state(found.dir)
    existing = state.proc(OPERATOR) if state else None
    if existing is not None and is_ours(existing):
        print(f"the operator is already running (pid {existing.pid}, log {existing.log})")
        return 0
    liveness, metrics = free_ports(2)
    argv = operatorproc.operator_argv(
        executable, liveness_port=liveness, metrics_port=metrics, resync_seconds=resync_seconds
    )
    layout = cluster.Layout(found.dir)
    env = {**os.environ, "KUBECONFIG": str(found.operator_kubeconfig)}
    proc = spawn(
        OPERATOR, argv, layout.log(OPERATOR), cwd=found.dir, env=env, port=metrics,
        health=operatorproc.liveness_url(liveness),
    )  # fmt: skip
    cluster.add_proc(found.dir, proc)
    try:
        cluster.wait_healthy(found.dir, OPERATOR, timeout)
    except cluster.DevclusterError:
        stop(proc)
        cluster.remove_proc(found.dir, OPERATOR)
        raise
    print(f"==> operator running as {manifests.OPERATOR_USER} (pid {proc.pid}, log {proc.log})")
    return 0


def _stop_operator(dir: Path) -> int:
    proc = cluster.remove_proc(dir.expanduser().resolve(), OPERATOR)
    if proc is None:
        print("no operator was started by start-operator")
        return 0
    print(f"operator (pid {proc.pid}): {stop(proc)}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            build.build(args.tools)
        elif args.command == "pin-kubernetes":
            print(f"wrote {gomod.pin_kubernetes(args.version)}")
        elif args.command == "up":
            found = cluster.up(args.dir, timeout=args.timeout)
            print("\nUse it with:\n  " + "\n  ".join(cluster.env_lines(found)))
        elif args.command == "down":
            cluster.down(args.dir)
        elif args.command == "status":
            return _status(args.dir)
        elif args.command == "env":
            print("\n".join(cluster.env_lines(_running(args.dir))))
        elif args.command == "kubectl":
            return _kubectl(args.dir, args.args)
        elif args.command == "start-operator":
            return _start_operator(args.dir, args.resync_seconds, args.timeout)
        elif args.command == "stop-operator":
            return _stop_operator(args.dir)
        elif args.command == "nodes":
            print(yaml.safe_dump_all([node.manifest() for node in nodes.NODES], sort_keys=False), end="")
    except (
        cluster.DevclusterError, build.BuildError, gomod.PinError, manifests.RulesError, stages.StageError,
        operatorproc.OperatorMissing,
    ) as error:  # fmt: skip
        print(f"modelplane devcluster {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `status | head`
        return 0
    return 0
