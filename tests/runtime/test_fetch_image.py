"""runtime-image/Dockerfile: its invariants, and the install it performs, checked without Docker.

There is no Docker engine here, so the Dockerfile is parsed and checked (stages, user, entrypoint,
what is installed), the exact file set it copies is built into a wheel and run, and pip resolves
`.[runtime]` from that file set to show no operator dependency comes in.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "runtime-image" / "Dockerfile"
IGNORE = ROOT / "runtime-image" / "Dockerfile.dockerignore"
OPERATOR_ONLY = {"kopf", "pydantic", "pydantic-core", "lightkube", "kubernetes"}


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, got {keyword}"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


def stage(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def test_multi_stage_with_a_variant_chosen_base(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    global_args, stages = dockerfile
    assert global_args["VARIANT"] == "cpu"
    assert global_args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert [s.name for s in stages] == ["build", "base-cpu", "base-cuda", "runtime"]
    assert stages[-1].base == "base-${VARIANT}"
    # build and final stages share one Python, so the venv's interpreter links stay valid
    assert {s.base for s in stages[:3]} == {"${PYTHON_IMAGE}"}
    assert any(
        "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env for env in stage(stages, "base-cuda").all("ENV")
    )
    assert not stage(stages, "base-cpu").instructions


def test_final_stage_runs_modelplane_as_uid_1000_with_caches_in_tmp(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[1][-1]
    assert final.all("USER")[-1] == "1000:1000"
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["modelplane"]
    assert json.loads(final.all("CMD")[-1]) == ["serve", "--model-repository", "/mnt/models"]
    assert final.all("EXPOSE") == ["8000 8001 8002"]
    env = dict(item.split("=", 1) for args in final.all("ENV") for item in shlex.split(args))
    for key in (
        "HOME",
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
        "XDG_CACHE_HOME",
        "TORCH_HOME",
        "TMPDIR",
    ):
        assert env[key].startswith("/tmp"), key
    assert env["PATH"].startswith("/opt/modelplane/bin:")
    assert not final.all("HEALTHCHECK")  # Kubernetes probes do this
    # the final stage installs nothing: it copies the build stage's venv
    assert final.all("COPY") == ["--from=build /opt/modelplane /opt/modelplane"]
    assert not any("pip" in run for run in final.all("RUN"))


def test_build_installs_only_the_runtime_extra_with_pinned_torch(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    build = stage(dockerfile[1], "build")
    runs = " ".join(build.all("RUN"))
    installs = [found for run in build.all("RUN") for found in re.findall(r"pip install ([^;&]+)", run)]
    assert [i.strip() for i in installs] == [
        "--upgrade pip",
        '--index-url "${index}" "torch==${TORCH_VERSION}"',
        '".[runtime]"',
    ]
    assert "https://download.pytorch.org/whl/cpu" in runs  # CPU torch by default
    assert all(
        "--mount=type=cache,target=/root/.cache/pip" in run
        for run in build.all("RUN")
        if "pip install" in run
    )
    assert not any(re.search(r"operator|dev|kopf|pydantic", install) for install in installs)
    pins = [r for r in runtime_requirements() if r.name == "torch"]
    args = dict(a.split("=", 1) for a in build.all("ARG") if "=" in a)
    assert [str(p.specifier) for p in pins] == [f"=={args['TORCH_VERSION']}"]


def copied_paths(stages: list[Stage]) -> list[str]:
    """Source paths of the build stage's COPY instructions (relative to the repository root)."""
    paths: list[str] = []
    for args in stage(stages, "build").all("COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        paths += parts[:-1]
    return paths


def test_the_copied_files_are_all_the_cli_needs_and_pass_the_ignore_file(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    copied = copied_paths(dockerfile[1])
    assert "operator/modelplane/cli.py" in copied
    assert not any(p.rstrip("/") == "operator/modelplane" for p in copied)  # the operator stays out
    tree = ast.parse((ROOT / "operator/modelplane/cli.py").read_text())
    needed = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("modelplane")
    }
    assert needed <= {"modelplane"}, f"cli.py imports {needed}: copy those files in the Dockerfile"
    patterns = [line for line in IGNORE.read_text().splitlines() if line and not line.startswith("#")]
    for path in copied:
        included = False
        for pattern in patterns:  # last match wins, as in .dockerignore
            negate = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch(path.rstrip("/"), bare) or path.startswith(bare + "/"):
                included = negate
        assert included, f"{path} is copied but excluded by {IGNORE.name}"


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["runtime"]]


def test_runtime_dependency_closure_has_no_operator_packages() -> None:
    """Walk the installed distributions from the runtime extra: what `.[runtime]` pulls in."""
    seen: set[str] = set()
    queue = [(r, "") for r in runtime_requirements()]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = requirement.name.lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a platform-specific dependency not installed here
        for sub in dist.requires or []:
            parsed = Requirement(sub)
            for wanted in requirement.extras or {""}:
                queue.append((parsed, wanted))
    names = {k.split("[")[0] for k in seen}
    assert {"torch", "tritonclient", "boto3", "cryptography"} <= names
    assert not names & OPERATOR_ONLY, names & OPERATOR_ONLY


def build_context(tmp_path: Path, stages: list[Stage]) -> Path:
    """Copy exactly what the Dockerfile copies, where it copies it."""
    context = tmp_path / "context"
    for path in copied_paths(stages):
        source, target = ROOT / path, context / path
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return context


def test_the_image_file_set_runs_fetch_and_nothing_of_the_operator(
    dockerfile: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    """Lay the copied sources out as the installed packages are, and run `modelplane` from there
    with `-I -S` (no site-packages, so nothing of this checkout's editable install can help)."""
    context = build_context(tmp_path, dockerfile[1])
    site = tmp_path / "site"
    for folder in ("operator", "runtime-image"):
        for package in (context / folder).iterdir():
            shutil.copytree(package, site / package.name)
    source = tmp_path / "model.pt2"
    source.write_bytes(b"weights")
    dest = tmp_path / "models"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import modelplane.cli as cli;"
        "assert cli.__file__.startswith(sys.argv[1]), cli.__file__;"
        "sys.exit(cli.main(sys.argv[2:]))"
    )
    ran = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, str(site), "fetch", f"file://{source}", str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert (dest / "model/1/model.pt2").read_bytes() == b"weights"
    operator = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, str(site), "operator"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert operator.returncode == 2  # not in the image: a clear message, not a traceback
    assert "missing dependency" in operator.stderr


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not pypi_reachable(), reason="resolving .[runtime] needs PyPI")
def test_pip_builds_and_resolves_the_image_install_without_operator_packages(
    dockerfile: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    """What `pip install ".[runtime]"` in the build stage installs, resolved from the same files
    (metadata only; the torch wheel comes from PyPI here instead of the CPU index)."""
    context = build_context(tmp_path, dockerfile[1])
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), "."],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("modelplane-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"modelplane/cli.py", "modelplane_runtime/fetch/command.py"} <= set(names)
    assert not any(
        n.startswith(("modelplane/commands/", "modelplane/reconcile/", "modelplane/kube/")) for n in names
    )
    assert "modelplane = modelplane.cli:main" in entry_points

    report = tmp_path / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "-q",
            "--report",
            str(report),
            ".[runtime]",
        ],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=600,
    )
    installed = {
        i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert installed["torch"].startswith("2.11.0")
    assert {"modelplane", "tritonclient", "grpcio", "boto3", "cryptography", "numpy"} <= set(installed)
    assert not set(installed) & OPERATOR_ONLY, set(installed) & OPERATOR_ONLY
