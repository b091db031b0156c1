"""What a source lists, and the one interface every scheme implements.

A source turns a URI into a Listing (files with sizes, an identity that changes when the content
changes, and the checksums the store publishes), then opens byte streams from an offset so an
interrupted file resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

CHUNK = 1 << 20  # 1 MiB reads: large enough for throughput, small enough for timely progress


@dataclass(frozen=True)
class Checksum:
    """A digest the store publishes for a file; `algo` is a hashlib name or "git-blob-sha1"."""

    algo: str
    hexdigest: str


@dataclass(frozen=True)
class RemoteFile:
    """One file of the source. `path` is relative to the URI ('/'-separated); `ref` is the
    scheme's handle (object key, URL); `identity` is None when the source offers no way to tell
    that content changed (then nothing is resumed or skipped)."""

    path: str
    size: int | None
    identity: str | None
    checksums: tuple[Checksum, ...] = ()
    ref: str = ""


@dataclass(frozen=True)
class Listing:
    """A single file (`kind="file"`) or the files under a folder-like prefix (`kind="folder"`).
    `default_name` is the model name the URI suggests (file stem or last path segment)."""

    kind: Literal["file", "folder"]
    files: tuple[RemoteFile, ...]
    default_name: str
    note: str = ""  # e.g. the commit a Hugging Face revision resolved to
    skipped: tuple[str, ...] = field(default=())  # hidden files and folder markers left out


class Stream(Protocol):
    """An open download: `start` is the offset the server honoured (0 if it ignored the range)."""

    start: int

    def chunks(self) -> Iterator[bytes]: ...


class Source(Protocol):
    def list(self) -> Listing:
        """List what the URI holds; raise FetchError if it holds nothing or cannot be read."""
        ...

    def open(self, file: RemoteFile, offset: int) -> AbstractContextManager[Stream]:
        """Open `file` from byte `offset`; errors are FetchError (transient ones are retried)."""
        ...

    def checksum_applies(self, file: RemoteFile, checksum: Checksum) -> bool:
        """Asked only after a mismatch: False when the published digest is known not to be a
        content hash for this file (an S3 ETag of an SSE-KMS object), so size alone must do."""
        ...
