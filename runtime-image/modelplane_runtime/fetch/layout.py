"""Where fetched files land under DEST. Pure functions, so the rules are easy to test and read.

The rules (README "Where fetched files land" says the same for users):

1. A single file lands at `<name>/<version>/<file>`; `name` defaults to the file's stem.
2. A folder whose top level has numeric version folders (`1/`, `2/`) is ONE Triton model
   directory: copied as it is to `<name>/`.
3. A folder with top-level sub-folders that are model directories (holding numeric version
   folders, or only a `config.pbtxt`, as an ensemble does) is a model REPOSITORY: copied as it
   is into DEST; --name and --version do not rename anything there.
4. Any other folder holds one model's files (`model.pt2` + `config.pbtxt`, a Hugging Face
   repository...): the model-level files (`config.pbtxt`, `model.yaml`) go to `<name>/`, all
   other files (sub-folders kept) to `<name>/<version>/`.

The result is always a Triton-style repository, so `modelplane serve --model-repository DEST
--model-name <name> --model-version <version>` finds the model. Hidden files and folders (names
starting with '.') are never copied: DEST's own bookkeeping (`.partial-*`, the manifest) is hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from modelplane_runtime.fetch.errors import UsageError

MODEL_LEVEL_FILES = frozenset({"config.pbtxt", "model.yaml"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,17})$")

Kind = Literal["file", "model-dir", "repository", "model-files"]


@dataclass(frozen=True)
class Placement:
    source: str  # path relative to the URI (or to the extracted archive)
    target: str  # path relative to DEST


@dataclass(frozen=True)
class Layout:
    kind: Kind
    placements: tuple[Placement, ...]

    @property
    def entries(self) -> tuple[str, ...]:
        """The top-level names this fetch owns in DEST (model folders, or a repository's top)."""
        return tuple(sorted({p.target.split("/", 1)[0] for p in self.placements}))


def validate_name(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise UsageError(
            f"invalid --name {name!r}: use letters, digits, '_', '.', '-' (up to 128, not starting with '.' or '-')"
        )
    return name


def validate_version(version: str) -> str:
    if not _VERSION.match(version):
        raise UsageError(f"invalid --version {version!r}: a model version is a non-negative integer, e.g. 1")
    return version


def name_from(text: str) -> str:
    """A valid model name derived from a file or folder name: `resnet50.pt2` -> `resnet50`."""
    base = text.rstrip("/").rsplit("/", 1)[-1]
    for suffix in ARCHIVE_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    else:
        stem, dot, _ = base.rpartition(".")
        base = stem if dot and stem else base
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).lstrip(".-")[:128]
    return cleaned or "model"


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def check_relpath(path: str) -> str:
    """Reject paths that would escape DEST; a hostile listing must not write outside it."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise UsageError(f"refusing unsafe path {path!r} in the source listing")
    return path


def wanted(path: str) -> bool:
    """Folder listings skip hidden files/folders and zero-length folder markers (`key/`)."""
    return bool(path) and not path.endswith("/") and not any(p.startswith(".") for p in path.split("/"))


def classify(paths: Iterable[str]) -> Kind:
    """Which of the folder rules (2-4 in the module docstring) a set of relative paths follows."""
    split = [p.split("/") for p in paths]
    top_dirs = {parts[0] for parts in split if len(parts) > 1}
    if any(d.isdigit() for d in top_dirs):
        return "model-dir"
    top_files = {parts[0] for parts in split if len(parts) == 1}
    if "config.pbtxt" in top_files:
        return "model-files"
    return "repository" if model_directories(split) else "model-files"


def model_directories(split: list[list[str]]) -> set[str]:
    """Top-level folders that are Triton model directories: they hold numeric version folders,
    or nothing but model-level files with a config.pbtxt (an ensemble, whose empty version folder
    an object store does not keep). `export/config.pbtxt` + `export/model.pt2` is not one: a
    model file outside a version folder is one model's files, wrapped in a folder."""
    versioned = {parts[0] for parts in split if len(parts) >= 3 and parts[1].isdigit()}
    files_in: dict[str, set[str]] = {}
    for parts in split:
        if len(parts) == 2:
            files_in.setdefault(parts[0], set()).add(parts[1])
    config_only = {
        d for d, names in files_in.items() if "config.pbtxt" in names and names <= MODEL_LEVEL_FILES
    }
    return versioned | config_only


def plan(paths: Iterable[str], *, single_file: bool, name: str, version: str) -> Layout:
    """Place every source path under DEST according to the rules above."""
    ordered = sorted(check_relpath(p) for p in paths)
    if single_file:
        placements = tuple(Placement(p, f"{name}/{version}/{p.rsplit('/', 1)[-1]}") for p in ordered)
        return Layout("file", placements)
    kind = classify(ordered)
    if kind == "repository":
        return Layout(kind, tuple(Placement(p, p) for p in ordered))
    if kind == "model-dir":
        return Layout(kind, tuple(Placement(p, f"{name}/{p}") for p in ordered))
    return Layout(
        kind,
        tuple(
            Placement(p, f"{name}/{p}" if p in MODEL_LEVEL_FILES else f"{name}/{version}/{p}")
            for p in ordered
        ),
    )


def unwrap_single_folder(paths: list[str]) -> tuple[str, list[str]]:
    """An archive that wraps everything in one folder (`resnet/...`) is read as that folder's
    content unless the wrapper is itself a model directory in a repository. Returns the prefix
    to strip ("" for none) and the remaining paths."""
    tops = {p.split("/", 1)[0] for p in paths}
    if len(tops) != 1 or any("/" not in p for p in paths):
        return "", paths
    if classify(paths) == "repository":
        return "", paths
    prefix = next(iter(tops)) + "/"
    return prefix, [p[len(prefix) :] for p in paths]
