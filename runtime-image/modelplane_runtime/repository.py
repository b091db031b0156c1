"""Finding models on disk: a Triton-style repository, one model folder, or one model file.

Pure file-system inspection (no torch): which models exist, their versions, their config files,
and which format each version holds. Formats are told apart by content, not only by extension:
a `.pt` may be TorchScript or a state_dict, a `.pt2` may be torch.export or an AOTInductor package.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from modelplane_runtime.errors import ModelLoadError

FORMATS = ("torch-export", "torchscript", "state-dict", "safetensors", "onnx", "python")
AOTI = "aoti"  # an AOTInductor package: a `.pt2` that holds compiled code, not a program

CONFIG_FILE = "config.pbtxt"
YAML_FILE = "model.yaml"
CODE_FILE = "model.py"

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ts", ".torchscript", ".jit")
_MODEL_SUFFIXES = (".pt2", ".onnx", ".safetensors", *_TORCH_SUFFIXES)


@dataclass(frozen=True)
class ModelSource:
    """One model as found on disk; `versions` maps a version to the folder (or file) holding it."""

    name: str
    root: Path
    versions: dict[int, Path]
    config_file: Path | None = None
    yaml_file: Path | None = None


@dataclass(frozen=True)
class VersionFiles:
    """What one version holds: its format, the model file, and `model.py` where one is needed."""

    format: str
    model_file: Path
    code_file: Path | None = None
    notes: list[str] = field(default_factory=list)


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "_"))


def _is_model_file(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() in _MODEL_SUFFIXES or path.name == CODE_FILE)


def _version_dirs(folder: Path) -> dict[int, Path]:
    versions: dict[int, Path] = {}
    for child in folder.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0:
            versions[int(child.name)] = child
    return versions


def _sidecars(folder: Path) -> tuple[Path | None, Path | None]:
    config = folder / CONFIG_FILE
    yaml_file = folder / YAML_FILE
    return (config if config.is_file() else None, yaml_file if yaml_file.is_file() else None)


def is_single_model(repository: Path) -> bool:
    """True when the path is one model (a file, a folder of model files, or a `<model>/` folder)."""
    if repository.is_file():
        return True
    if not repository.is_dir():
        return False
    children = [c for c in repository.iterdir() if _visible(c)]
    if any(_is_model_file(c) for c in children):
        return True
    return bool(_version_dirs(repository))


def discover(repository: Path, model_name: str | None, model_version: str | None) -> list[ModelSource]:
    """All models under `repository`, in name order. Errors name the path and what was expected."""
    if not repository.exists():
        raise ModelLoadError(f"model repository {repository} does not exist")
    if repository.is_file():
        if not _is_model_file(repository):
            raise ModelLoadError(
                f"{repository} is not a model file (expected one of {', '.join(_MODEL_SUFFIXES)} or {CODE_FILE})"
            )
        config, yaml_file = _sidecars(repository.parent)
        name = model_name or repository.stem
        return [
            ModelSource(
                name, repository.parent, {_version_number(model_version): repository}, config, yaml_file
            )
        ]
    if is_single_model(repository):
        config, yaml_file = _sidecars(repository)
        name = model_name or repository.resolve().name
        versions = _version_dirs(repository)
        if not versions or any(_is_model_file(c) for c in repository.iterdir() if _visible(c)):
            versions = {_version_number(model_version): repository}
        return [ModelSource(name, repository, versions, config, yaml_file)]
    sources = []
    for child in sorted(repository.iterdir()):
        if not child.is_dir() or not _visible(child):
            continue
        config, yaml_file = _sidecars(child)
        versions = _version_dirs(child)
        if versions or config or yaml_file:
            sources.append(ModelSource(child.name, child, versions, config, yaml_file))
    if not sources:
        raise ModelLoadError(
            f"no models found in {repository}: expected <model>/<version>/model.* folders, "
            f"or a single model file such as model.pt2"
        )
    return sources


def _version_number(text: str | None) -> int:
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise ModelLoadError(f"--model-version must be a positive integer, got {text!r}")
    return int(text)


def zip_kind(path: Path) -> str | None:
    """What a torch zip archive holds: torchscript, state-dict, torch-export, aoti; None if not a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    # Archives hold one top-level folder (named after the file at save time).
    inner = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if any(n.startswith("data/aotinductor/") for n in inner):
        return AOTI
    if "archive_format" in inner or any(n.startswith("models/") and n.endswith(".json") for n in inner):
        return "torch-export"
    if any(n.startswith("serialized_exported_program") for n in inner):
        return "torch-export"
    if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
        return "torchscript"
    if "data.pkl" in inner:
        return "state-dict"
    return None


def classify(path: Path) -> str | None:
    """The format a single file holds, or None when it is not a model file."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".pt2":
        kind = zip_kind(path)
        return kind if kind in ("torch-export", AOTI) else "torch-export"
    if suffix in _TORCH_SUFFIXES:
        kind = zip_kind(path)
        if kind in ("torchscript", "torch-export", AOTI):
            return kind
        # A zip with data.pkl, or the legacy (pre-1.6) torch.save format: weights, not a program.
        return "state-dict"
    return None


def version_files(location: Path, requested_format: str | None, default_filename: str = "") -> VersionFiles:
    """Pick the model file in a version folder (or the file itself) and tell its format."""
    if location.is_file():
        files = [location]
        code_dirs = [location.parent]
    else:
        files = sorted(c for c in location.iterdir() if c.is_file() and _visible(c))
        code_dirs = [location, location.parent]
    code_file = next((d / CODE_FILE for d in code_dirs if (d / CODE_FILE).is_file()), None)
    if location.is_file() and location.name == CODE_FILE:
        code_file = location

    candidates = [(f, kind) for f in files if (kind := classify(f)) is not None]
    if requested_format == "python" or (
        not candidates and code_file is not None and requested_format is None
    ):
        if code_file is None:
            raise ModelLoadError(f"--model-format python needs a {CODE_FILE} in {location}")
        return VersionFiles("python", code_file)
    if requested_format is not None:
        wanted = {requested_format, AOTI} if requested_format == "torch-export" else {requested_format}
        # A weights file is a state_dict whether it is .pt or .safetensors; honour what was asked.
        matching = [(f, k) for f, k in candidates if k in wanted]
        if requested_format == "state-dict" and not matching:
            matching = [(f, "state-dict") for f, k in candidates if k == "torchscript"]
        if not matching:
            found = ", ".join(f.name for f in files) or "no files"
            raise ModelLoadError(
                f"--model-format {requested_format}: no such model file in {location} (found: {found})"
            )
        candidates = matching
    if not candidates:
        found = ", ".join(f.name for f in files) or "no files"
        raise ModelLoadError(
            f"no model file in {location} (found: {found}); expected model.pt2 (torch.export), "
            f"model.pt (TorchScript), weights + {CODE_FILE}, model.onnx, or {CODE_FILE} alone"
        )
    if len(candidates) > 1:
        preferred = [c for c in candidates if c[0].name == default_filename] or [
            c for c in candidates if c[0].stem == "model"
        ]
        if len(preferred) != 1:
            names = ", ".join(f.name for f, _ in candidates)
            raise ModelLoadError(
                f"several model files in {location} ({names}); keep one, name it model.*, "
                f"or set default_model_filename in {CONFIG_FILE}"
            )
        candidates = preferred
    model_file, kind = candidates[0]
    if kind in ("state-dict", "safetensors"):
        if code_file is None:
            raise ModelLoadError(
                f"{model_file} holds weights ({kind}) but there is no {CODE_FILE} next to it "
                f"that builds the module (define build_model() in {location / CODE_FILE})"
            )
        return VersionFiles(kind, model_file, code_file)
    return VersionFiles(kind, model_file)
