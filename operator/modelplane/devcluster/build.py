"""Build the control plane's binaries from the pinned Go modules under tests/controlplane/.

One table, ``TOOLS``, says what to build: each row names a Go module folder, the package to build,
the required module whose version names the build, and the ``-X`` version stamps. Outputs land in
``$MODELPLANE_CACHE/bin/<name>-<version>/<name>`` next to a stamp (a hash of go.mod, go.sum, the
main package's sources, the flags and the Go version): when the stamp matches nothing runs, and
when it does not, Go's build cache (also under ``$MODELPLANE_CACHE``) makes it a relink.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from modelplane.devcluster.paths import REPO_ROOT, cache_dir, go_env

KUBE_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
# Upstream's hack/lib/version.sh stamps these; without them /version says v0.0.0-master.
KUBE_STAMPS = tuple(
    f"-X {package}.{key}={{{value}}}"
    for package in KUBE_VERSION_PACKAGES
    for key, value in (
        ("gitVersion", "version"),
        ("gitMajor", "major"),
        ("gitMinor", "minor"),
        ("gitTreeState", "tree_state"),
        ("gitCommit", "commit"),
        ("buildDate", "date"),
    )
)


@dataclass(frozen=True)
class Tool:
    """One binary to build.

    ``ldflags`` are ``-X`` templates over: version (v1.34.10), semver (1.34.10), major, minor,
    commit (empty when the module proxy does not say), revision (the commit, else the
    version), date (the version's publication time),
    tree_state. A flag whose value renders empty is left out.
    """

    name: str
    module_dir: str  # Go module folder, relative to the repository root
    package: str  # what `go build` builds, relative to module_dir ("./cmd/x") or an import path
    version_of: str  # the required module whose version names this build
    ldflags: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # copied from version_of's module folder into <out>/files/
    on_demand: bool = False  # built only when asked for by name


TOOLS: tuple[Tool, ...] = (
    Tool("etcd", "tests/controlplane/etcd", ".", "go.etcd.io/etcd/server/v3",
         ("-X go.etcd.io/etcd/api/v3/version.GitSHA={revision}",)),
    Tool("kube-apiserver", "tests/controlplane/kubernetes", "./cmd/kube-apiserver", "k8s.io/kubernetes", KUBE_STAMPS),
    Tool("kube-controller-manager", "tests/controlplane/kubernetes", "./cmd/kube-controller-manager",
         "k8s.io/kubernetes", KUBE_STAMPS),
    Tool("kube-scheduler", "tests/controlplane/kubernetes", "./cmd/kube-scheduler", "k8s.io/kubernetes", KUBE_STAMPS),
    Tool("kwok", "tests/controlplane/kwok", "sigs.k8s.io/kwok/cmd/kwok", "sigs.k8s.io/kwok",
         ("-X sigs.k8s.io/kwok/pkg/consts.Version={semver}",),
         files=(
             # KWOK v0.8 has no built-in stages: `devcluster up` composes its --config from these.
             "kustomize/stage/node/fast/node-initialize.yaml",
             "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
             "kustomize/stage/pod/fast/pod-ready.yaml",
             "kustomize/stage/pod/fast/pod-complete.yaml",
             "kustomize/stage/pod/fast/pod-delete.yaml",
         )),
    Tool("kubectl", "tests/controlplane/kubernetes", "./cmd/kubectl", "k8s.io/kubernetes", KUBE_STAMPS, on_demand=True),
    # The chart and GitOps tests' tools (tests/tools/), built when a test asks for them.
    Tool("helm", "tests/tools/helm", "helm.sh/helm/v4/cmd/helm", "helm.sh/helm/v4",
         tuple(f"-X helm.sh/helm/v4/internal/version.{key}={{{value}}}"
               for key, value in (("version", "version"), ("gitCommit", "commit"), ("gitTreeState", "tree_state"))),
         on_demand=True),
    Tool("kstatus", "tests/tools/kstatus", ".", "sigs.k8s.io/cli-utils", on_demand=True),
)  # fmt: skip


class BuildError(RuntimeError):
    """A build could not be done; the message says which tool and why."""


@dataclass(frozen=True)
class ModuleVersion:
    path: str
    version: str
    dir: Path
    time: str  # RFC 3339, empty when unknown
    commit: str  # empty when unknown


@dataclass(frozen=True)
class Built:
    tool: Tool
    version: str
    binary: Path

    @property
    def files_dir(self) -> Path:
        return self.binary.parent / "files"


def tool_named(name: str) -> Tool:
    for tool in TOOLS:
        if tool.name == name:
            return tool
    raise BuildError(f"unknown tool {name!r}; known: {', '.join(t.name for t in TOOLS)}")


def stamp_values(module: ModuleVersion) -> dict[str, str]:
    """The values ``Tool.ldflags`` templates may use."""
    semver = module.version.removeprefix("v")
    parts = semver.split(".")
    date = ""
    if module.time:
        date = datetime.fromisoformat(module.time.replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": module.version,
        "semver": semver,
        "major": parts[0] if parts else "",
        "minor": parts[1] if len(parts) > 1 else "",
        "commit": module.commit,
        "revision": module.commit or module.version,  # where a tool insists on some revision
        "date": date,
        "tree_state": "clean",
    }


def render_ldflags(tool: Tool, values: dict[str, str]) -> str:
    """``-s -w`` plus every stamp whose value is known."""
    flags = ["-s", "-w"]
    for template in tool.ldflags:
        rendered = template.format(**values)
        if not rendered.endswith("="):
            flags.append(rendered)
    return " ".join(flags)


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, **go_env(cache)}


def _go_json(args: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed in {cwd}:\n{result.stderr.strip()}")
    data: dict[str, object] = json.loads(result.stdout)
    return data


def required_version(module_dir: Path, module_path: str, env: dict[str, str]) -> str:
    """The version go.mod requires of a module (no network: reads go.mod only)."""
    gomod = _go_json(["mod", "edit", "-json"], module_dir, env)
    for require in gomod.get("Require") or []:  # type: ignore[attr-defined]
        if require["Path"] == module_path:
            return str(require["Version"])
    raise BuildError(f"{module_dir}/go.mod does not require {module_path}")


def module_version(module_dir: Path, module_path: str, env: dict[str, str]) -> ModuleVersion:
    """Download (if needed) the module go.mod pins and say where it is and what it is."""
    version = required_version(module_dir, module_path, env)
    info = _go_json(["mod", "download", "-json", f"{module_path}@{version}"], module_dir, env)
    if info.get("Error"):
        raise BuildError(f"{module_path}@{version}: {info['Error']}")
    origin = info.get("Origin") or {}
    return ModuleVersion(
        path=module_path,
        version=version,
        dir=Path(str(info["Dir"])),
        time=str(info.get("Time") or ""),
        commit=str(origin.get("Hash", "")) if isinstance(origin, dict) else "",
    )


def go_version(env: dict[str, str]) -> str:
    result = subprocess.run(["go", "version"], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise BuildError(f"`go version` failed ({result.stderr.strip() or 'no output'}); is Go installed?")
    return result.stdout.strip()


def source_fingerprint(tool: Tool, module_dir: Path, ldflags: str, go: str) -> str:
    """What a build depends on besides the module cache (which go.sum pins)."""
    digest = hashlib.sha256()
    for part in (tool.name, tool.package, ldflags, go, *tool.files):
        digest.update(part.encode() + b"\0")
    for name in ("go.mod", "go.sum"):
        digest.update((module_dir / name).read_bytes())
    if tool.package.startswith("."):
        for source in sorted((module_dir / tool.package).glob("*.go")):
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def output_dir(cache: Path, tool: Tool, version: str) -> Path:
    return cache / "bin" / f"{tool.name}-{version}"


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _run_go_build(
    tool: Tool, args: list[str], cwd: Path, env: dict[str, str], log: Iterable[str] = ()
) -> None:
    """Run `go build -v`, printing a progress line every 20 s (a cold build takes many minutes)."""
    started = time.monotonic()
    compiled = 0
    tail: deque[str] = deque(maxlen=60)
    lock = threading.Lock()
    done = threading.Event()

    def report() -> None:
        while not done.wait(20):
            with lock:
                count = compiled
            print(
                f"    {tool.name}: {count} packages compiled, {_format_duration(time.monotonic() - started)}",
                flush=True,
            )

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert process.stdout is not None
    for line in process.stdout:
        tail.append(line.rstrip())
        with lock:
            compiled += 1
    code = process.wait()
    done.set()
    reporter.join()
    if code != 0:
        raise BuildError(
            f"building {tool.name} failed (go build exit {code}); last output:\n" + "\n".join(tail)
        )


def build_tool(tool: Tool, cache: Path | None = None, *, quiet: bool = False) -> Built:
    """Build one tool unless the cache already holds it for this exact input."""
    cache = cache or cache_dir()
    env = _env(cache)
    module_dir = REPO_ROOT / tool.module_dir
    if not (module_dir / "go.mod").is_file():
        raise BuildError(f"{tool.name}: {module_dir}/go.mod is missing")
    module = module_version(module_dir, tool.version_of, env)
    ldflags = render_ldflags(tool, stamp_values(module))
    fingerprint = source_fingerprint(tool, module_dir, ldflags, go_version(env))
    out = output_dir(cache, tool, module.version)
    binary, stamp = out / tool.name, out / ".stamp"
    built = Built(tool, module.version, binary)

    def up_to_date() -> bool:
        return binary.is_file() and stamp.is_file() and stamp.read_text().strip() == fingerprint

    if up_to_date():
        if not quiet:
            print(f"==> {tool.name} {module.version}: up to date ({binary})", flush=True)
        return built
    with _exclusive(out, tool.name):
        if up_to_date():  # another process built it while we waited
            return built
        _build_into(tool, module, ldflags, module_dir, env, out)
        stamp.write_text(fingerprint + "\n")
    return built


@contextmanager
def _exclusive(out: Path, name: str) -> Iterator[None]:
    """One build per output folder at a time (two `make` runs may race); others wait their turn."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"    {name}: another process is building it; waiting for that build", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build_into(
    tool: Tool, module: ModuleVersion, ldflags: str, module_dir: Path, env: dict[str, str], out: Path
) -> None:
    print(
        f"==> {tool.name} {module.version}: building (a cold build takes minutes; warm, a relink)", flush=True
    )
    started = time.monotonic()
    partial = out / f".{tool.name}.partial-{os.getpid()}"
    args = ["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(partial), tool.package]
    try:
        _run_go_build(tool, args, module_dir, env)
        if tool.files:
            files = out / "files"
            shutil.rmtree(files, ignore_errors=True)
            files.mkdir()
            for relative in tool.files:
                source = module.dir / relative
                if not source.is_file():
                    raise BuildError(f"{tool.name}: {relative} is not in {module.path}@{module.version}")
                shutil.copyfile(source, files / source.name)
        partial.replace(out / tool.name)
    finally:
        partial.unlink(missing_ok=True)
    print(
        f"    {tool.name}: built in {_format_duration(time.monotonic() - started)} -> {out / tool.name}",
        flush=True,
    )


def build(names: Sequence[str] = (), cache: Path | None = None, *, quiet: bool = False) -> dict[str, Built]:
    """Build the named tools, or every tool that is not on-demand."""
    tools = [tool_named(name) for name in names] if names else [t for t in TOOLS if not t.on_demand]
    started = time.monotonic()
    results = {tool.name: build_tool(tool, cache, quiet=quiet) for tool in tools}
    if not quiet:
        print(f"==> control plane ready in {_format_duration(time.monotonic() - started)}", flush=True)
    return results


def find_kubectl(cache: Path | None = None) -> Path:
    """``$MODELPLANE_KUBECTL``, else kubectl from PATH, else one built from our Kubernetes module."""
    override = os.environ.get("MODELPLANE_KUBECTL")
    if override:
        return Path(override)
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    print("kubectl is not on PATH: building it from tests/controlplane/kubernetes", file=sys.stderr)
    return build_tool(tool_named("kubectl"), cache).binary
