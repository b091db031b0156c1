"""Unpack a fetched .tar(.gz|.bz2|.xz)/.tgz/.zip, as KServe's storage initializer does, refusing
members that would land outside the target (absolute paths, '..', links pointing out, devices)."""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from modelplane_runtime.fetch.errors import FetchError
from modelplane_runtime.fetch.layout import check_relpath, wanted


def extract(archive: Path, into: Path, *, label: str) -> list[str]:
    """Extract `archive` into `into` and return the relative paths of the files to place."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        if label.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = info.filename.rstrip("/")
                    if name:
                        _check(name, label)
                zf.extractall(into)
        else:
            with tarfile.open(archive, "r:*") as tf:
                # The "data" filter refuses absolute paths, '..', links leaving the target,
                # device files, and strips set-uid bits.
                tf.extractall(into, filter="data")
    except tarfile.FilterError as exc:  # the "data" filter refused a member
        raise FetchError(f"{label}: refusing archive member ({exc})") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise FetchError(f"{label} is not a readable archive ({exc})") from None
    files = []
    for dirpath, _, filenames in os.walk(into):
        for filename in filenames:
            path = Path(dirpath, filename)
            rel = path.relative_to(into).as_posix()
            if wanted(rel) and _materialize(path, into):
                files.append(rel)
    if not files:
        raise FetchError(f"{label} holds no files")
    return sorted(files)


def _materialize(path: Path, root: Path) -> bool:
    """Replace a symlink to a file inside the archive by a copy: files are moved into version
    folders later, which would break relative links. Links to elsewhere are dropped."""
    if not path.is_symlink():
        return path.is_file()
    target = path.resolve()
    if not target.is_file() or not target.is_relative_to(root.resolve()):
        path.unlink()
        return False
    path.unlink()
    shutil.copyfile(target, path)
    return True


def _check(name: str, label: str) -> None:
    try:
        check_relpath(name)
    except FetchError:
        raise FetchError(
            f"{label}: refusing archive member {name!r} (it would land outside the model folder)"
        ) from None
