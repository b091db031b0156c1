"""Download one file into the staging area: resume, retry with backoff, verify, then publish.

A file is written to `incoming/<path>` and renamed to its verified place only after its size and
checksums match, so a verified place never holds a partial file. A restarted fetch resumes an
incoming file from its size when the source's identity (ETag, generation, sha) is unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modelplane_runtime.fetch.errors import FetchError
from modelplane_runtime.fetch.listing import CHUNK, Checksum, RemoteFile, Source
from modelplane_runtime.fetch.progress import Progress, human

log = logging.getLogger("modelplane.fetch")
T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    retries: int = 5  # extra attempts per request after a transient error
    retry_wait: float = 1.0  # first backoff in seconds; doubles per attempt, capped at 30s
    timeout: float = 60.0  # seconds without progress on a connection before it counts as failed
    jobs: int = 4  # files fetched in parallel
    progress_interval: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins (up to 5 minutes)."""
        base = min(self.retry_wait * 2 ** (attempt - 1), 30.0)
        delay = base * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 300.0))
        return delay


class Cancelled(Exception):
    """Another file failed; this one stops at the next chunk."""


def retrying(what: str, policy: Policy, stop: threading.Event, call: Callable[[], T]) -> T:
    """Run `call()` until it succeeds, retrying transient FetchErrors with backoff."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except FetchError as exc:
            if not exc.transient or attempt > policy.retries:
                raise
            wait = policy.delay(attempt, exc.retry_after)
            cause = exc.cause if exc.cause.startswith(f"{what}:") else f"{what}: {exc.cause}"
            log.warning(
                "%s; retrying in %.1fs (attempt %d of %d)", cause, wait, attempt + 1, policy.retries + 1
            )
            if stop.wait(wait):
                raise Cancelled() from None


class Digest:
    """The running checksums of a file being written front to back."""

    def __init__(self, checksums: tuple[Checksum, ...], size: int | None) -> None:
        self.expected = tuple(c for c in checksums if self._usable(c, size))
        self.size = size
        self.reset()

    @staticmethod
    def _usable(checksum: Checksum, size: int | None) -> bool:
        if checksum.algo == "git-blob-sha1":
            return size is not None
        return checksum.algo in hashlib.algorithms_available

    def reset(self) -> None:
        self.position = 0
        self.hashers: list[tuple[Checksum, Any]] = []
        for checksum in self.expected:
            if checksum.algo == "git-blob-sha1":
                hasher = hashlib.sha1(f"blob {self.size}\0".encode(), usedforsecurity=False)
            else:
                hasher = hashlib.new(checksum.algo)
            self.hashers.append((checksum, hasher))

    def update(self, data: bytes) -> None:
        for _, hasher in self.hashers:
            hasher.update(data)
        self.position += len(data)

    def catch_up(self, path: Path, upto: int) -> None:
        """Hash the first `upto` bytes already on disk (a resumed download)."""
        if self.position == upto:
            return
        self.reset()
        if not self.hashers:
            self.position = upto
            return
        with open(path, "rb") as handle:
            while self.position < upto:
                data = handle.read(min(CHUNK, upto - self.position))
                if not data:
                    break
                self.update(data)

    def mismatches(self) -> list[tuple[Checksum, str]]:
        return [(c, h.hexdigest()) for c, h in self.hashers if h.hexdigest() != c.hexdigest.lower()]


class State:
    """Which source identity each incoming file belongs to, kept in the partial folder so a
    restarted fetch knows whether a leftover file may be resumed."""

    def __init__(self, path: Path) -> None:
        import json

        self._json = json
        self.path = path
        self._lock = threading.Lock()
        try:
            data = json.loads(path.read_text())
            self.files: dict[str, str] = dict(data.get("files", {}))
        except (OSError, ValueError, AttributeError):
            self.files = {}

    def get(self, path: str) -> str | None:
        with self._lock:
            return self.files.get(path)

    def set(self, path: str, identity: str | None) -> None:
        with self._lock:
            if identity is None:
                self.files.pop(path, None)
            else:
                self.files[path] = identity
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(self._json.dumps({"files": self.files}, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


def is_complete(file: RemoteFile, final: Path, state: State) -> bool:
    """Verified by an earlier run of the same fetch (same identity, same size)."""
    if file.identity is None or state.get(file.path) != file.identity:
        return False
    try:
        size = final.stat().st_size
    except FileNotFoundError:
        return False
    return file.size is None or size == file.size


def resumable_bytes(file: RemoteFile, incoming: Path, state: State) -> int:
    if file.identity is None or state.get(file.path) != file.identity:
        return 0
    try:
        return incoming.stat().st_size
    except FileNotFoundError:
        return 0


def fetch_file(
    source: Source,
    file: RemoteFile,
    *,
    incoming: Path,
    final: Path,
    state: State,
    progress: Progress,
    policy: Policy,
    stop: threading.Event,
) -> None:
    """Bring `file` to `final`, verified. Raises FetchError (or Cancelled)."""
    if is_complete(file, final, state):
        log.info("%s: already fetched and verified", file.path)
        return
    if state.get(file.path) != file.identity or file.identity is None:
        incoming.unlink(missing_ok=True)
        state.set(file.path, file.identity)
    incoming.parent.mkdir(parents=True, exist_ok=True)
    offset = resumable_bytes(file, incoming, state)
    if file.size is not None and offset > file.size:
        offset = 0
        incoming.unlink(missing_ok=True)
    progress.start_file(file.path, file.size, offset)
    digest = Digest(file.checksums, file.size)
    started = time.monotonic()
    received = [0]  # bytes over the network across attempts, for the rate in the log

    retrying(
        file.path, policy, stop, lambda: _transfer(source, file, incoming, digest, progress, stop, received)
    )
    verified = _verify(source, file, incoming, digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(incoming, final)
    progress.finish_file(file.path, time.monotonic() - started, received[0], verified)


def _transfer(
    source: Source,
    file: RemoteFile,
    incoming: Path,
    digest: Digest,
    progress: Progress,
    stop: threading.Event,
    tally: list[int],
) -> None:
    """One request: append from where the incoming file ends; `tally[0]` counts bytes received."""
    have = incoming.stat().st_size if incoming.exists() else 0
    received = 0
    with source.open(file, have) as stream:
        if stream.start != have:
            if stream.start > have:
                raise FetchError(f"{file.path}: server resumed at byte {stream.start}, expected {have}")
            log.info(
                "%s: server sent the file from byte %d, not %d; starting over there",
                file.path,
                stream.start,
                have,
            )
            progress.restart_file(file.path, have - stream.start)
            with open(incoming, "r+b") as handle:
                handle.truncate(stream.start)
            have = stream.start
        digest.catch_up(incoming, have)
        with open(incoming, "ab") as handle:
            for chunk in stream.chunks():
                if stop.is_set():
                    raise Cancelled()
                handle.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                tally[0] += len(chunk)
                progress.advance(file.path, len(chunk))
                if file.size is not None and have + received > file.size:
                    raise FetchError(
                        f"{file.path}: received more than the listed {file.size} bytes; the source changed "
                        "while it was being fetched, fetch again"
                    )
    total = have + received
    if file.size is not None and total < file.size:
        raise FetchError(
            f"{file.path}: connection closed after {human(total)} of {human(file.size)}", transient=True
        )


def _verify(source: Source, file: RemoteFile, incoming: Path, digest: Digest) -> str:
    """Check size and checksums; on a mismatch drop the file so the next attempt starts clean."""
    size = incoming.stat().st_size
    if file.size is not None and size != file.size:
        incoming.unlink(missing_ok=True)
        raise FetchError(f"{file.path}: size mismatch: expected {file.size} bytes, got {size}")
    digest.catch_up(incoming, size)
    checked = [c.algo for c in digest.expected]
    for checksum, actual in digest.mismatches():
        if not source.checksum_applies(file, checksum):
            log.info(
                "%s: the store's %s is not a content hash for this object; size checked",
                file.path,
                checksum.algo,
            )
            checked.remove(checksum.algo)
            continue
        incoming.unlink(missing_ok=True)
        raise FetchError(
            f"{file.path}: checksum mismatch: {checksum.algo} expected {checksum.hexdigest}, got {actual}"
        )
    if checked:
        return f"{', '.join(checked)} verified"
    return "size verified" if file.size is not None else "no size or checksum to verify"
