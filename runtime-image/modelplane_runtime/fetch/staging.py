"""DEST's bookkeeping: the hidden partial folder, the manifest, the lock, and the final swap.

Everything is staged inside DEST (`DEST/.partial-<key>/`) because the container's root filesystem
is read-only and a rename cannot cross filesystems; the swap is then a rename per top-level entry,
so DEST holds either the previous complete model or the new complete one, never half of one.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelplane_runtime.fetch.errors import FetchError
from modelplane_runtime.fetch.layout import Layout
from modelplane_runtime.fetch.listing import Listing

log = logging.getLogger("modelplane.fetch")

MANIFEST = ".modelplane-fetch.json"
LOCK = ".modelplane-fetch.lock"
PARTIAL_PREFIX = ".partial-"
TRASH_PREFIX = ".trash-"
MANIFEST_FORMAT = 1


def staging_key(uri: str, name: str, version: str) -> str:
    """Same URI, name and version -> same partial folder, so a restart finds its own leftovers."""
    return hashlib.sha256(f"{uri}\n{name}\n{version}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """What a completed fetch put in DEST, and which source state it came from."""

    uri: str
    name: str
    version: str
    kind: str
    entries: tuple[str, ...]
    sources: Mapping[str, Mapping[str, Any]]  # source path -> {"size", "identity"}
    files: Mapping[str, int]  # DEST-relative path -> size
    fetched_at: str = ""
    note: str = ""

    def to_json(self) -> str:
        data = {
            "format": MANIFEST_FORMAT,
            "uri": self.uri,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "entries": list(self.entries),
            "note": self.note,
            "fetched_at": self.fetched_at,
            "sources": {k: dict(v) for k, v in sorted(self.sources.items())},
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def read(cls, dest: Path) -> Manifest | None:
        try:
            data = json.loads((dest / MANIFEST).read_text())
            if data.get("format") != MANIFEST_FORMAT:
                return None
            return cls(
                uri=data["uri"],
                name=data["name"],
                version=data["version"],
                kind=data["kind"],
                entries=tuple(data["entries"]),
                sources=data["sources"],
                files={k: int(v) for k, v in data["files"].items()},
                fetched_at=data.get("fetched_at", ""),
                note=data.get("note", ""),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def same_request(self, uri: str, name: str, version: str) -> bool:
        return (self.uri, self.name, self.version) == (uri, name, version)

    def files_present(self, dest: Path) -> bool:
        """Every recorded file is there with its size (sizes, not hashes: re-reading gigabytes at
        every pod restart would cost what the skip saves)."""
        for rel, size in self.files.items():
            try:
                if (dest / rel).stat().st_size != size:
                    return False
            except OSError:
                return False
        return True


def source_record(listing: Listing) -> dict[str, dict[str, Any]]:
    return {f.path: {"size": f.size, "identity": f.identity} for f in listing.files}


def unchanged(manifest: Manifest, listing: Listing) -> bool:
    """The source lists the same files with the same identities; None identities never match."""
    if any(f.identity is None for f in listing.files):
        return False
    return {k: dict(v) for k, v in manifest.sources.items()} == source_record(listing)


@contextmanager
def locked(dest: Path) -> Iterator[None]:
    """One fetch per DEST at a time (a shared volume may be fetched into by several pods)."""
    with open(dest / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another fetch is writing to %s; waiting for it", dest)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_dest(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(
            f"cannot create {dest}: {exc.strerror}; mount a writable volume (emptyDir) there"
        ) from None
    if not os.access(dest, os.W_OK | os.X_OK):
        raise FetchError(
            f"{dest} is not writable by uid {os.getuid()}; mount a writable volume (emptyDir) there"
        )


class Staging:
    def __init__(self, dest: Path, key: str) -> None:
        self.dest = dest
        self.key = key
        self.root = dest / f"{PARTIAL_PREFIX}{key}"
        self.incoming = self.root / "incoming"
        self.tree = self.root / "tree"
        self.archive = self.root / "archive"
        self.extracted = self.root / "extracted"
        self.state_file = self.root / "state.json"

    def clean_stale(self) -> None:
        """Drop partial folders of other fetches (another URI, name or version) and trash left
        by a fetch killed during its swap; keep ours, it may be resumed."""
        for entry in self.dest.iterdir():
            stale_partial = entry.name.startswith(PARTIAL_PREFIX) and entry != self.root
            if stale_partial or entry.name.startswith(TRASH_PREFIX) or entry.name == MANIFEST + ".tmp":
                log.info("removing %s left by an earlier fetch", entry.name)
                _remove(entry)

    def create(self) -> None:
        for folder in (self.incoming, self.tree):
            folder.mkdir(parents=True, exist_ok=True)

    def partial_bytes(self) -> int:
        total = 0
        for folder in (self.incoming, self.tree, self.archive):
            for dirpath, _, filenames in os.walk(folder):
                total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in filenames)
        return total

    def prune_tree(self, layout: Layout) -> None:
        """Remove anything in tree/ that this layout does not place (left by a run whose
        listing differed), so the swap moves exactly the planned files."""
        planned = {p.target for p in layout.placements}
        for dirpath, dirnames, filenames in os.walk(self.tree, topdown=False):
            for filename in filenames:
                path = Path(dirpath, filename)
                if path.relative_to(self.tree).as_posix() not in planned:
                    path.unlink()
            for dirname in dirnames:
                path = Path(dirpath, dirname)
                if not any(path.iterdir()):
                    path.rmdir()
        missing = [t for t in sorted(planned) if not (self.tree / t).is_file()]
        if missing:
            raise FetchError(f"internal error: staged files missing: {', '.join(missing[:5])}")

    def swap(self, layout: Layout, manifest: Manifest, previous: Manifest | None) -> None:
        """Move each staged top-level entry into DEST, replacing what is there, then record it."""
        trash = self.dest / f"{TRASH_PREFIX}{self.key}"
        trash.mkdir(exist_ok=True)
        for entry in layout.entries:
            target = self.dest / entry
            if target.exists() or target.is_symlink():
                os.replace(target, trash / entry)
            os.replace(self.tree / entry, target)
        tmp = self.dest / (MANIFEST + ".tmp")
        with open(tmp, "w") as handle:
            handle.write(manifest.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.dest / MANIFEST)
        if previous is not None:
            for entry in set(previous.entries) - set(layout.entries):
                stale = self.dest / entry
                if stale.exists() and "/" not in entry and not entry.startswith("."):
                    log.info("removing %s, fetched earlier from %s", entry, previous.uri)
                    os.replace(stale, trash / entry)
        _remove(trash)
        _remove(self.root)

    def discard(self) -> None:
        _remove(self.root)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def disk_error(exc: OSError, dest: Path) -> FetchError:
    """Name the disk problem: full, read-only, or permissions."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FetchError(
            f"no space left in {dest}; raise the volume's size (emptyDir sizeLimit, ephemeral-storage)"
        )
    if exc.errno == errno.EROFS:
        return FetchError(f"{dest} is read-only; mount a writable volume (emptyDir) there")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FetchError(
            f"permission denied writing in {dest} ({exc.filename}); is it writable by uid {os.getuid()}?"
        )
    return FetchError(f"cannot write in {dest}: {exc.strerror or exc}")
