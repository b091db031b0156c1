"""file:// — a path on the node or in a mounted volume (a copy, so DEST stays self-contained)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from modelplane_runtime.fetch.errors import FetchError
from modelplane_runtime.fetch.layout import name_from, wanted
from modelplane_runtime.fetch.listing import CHUNK, Checksum, Listing, RemoteFile
from modelplane_runtime.fetch.uris import FileURI


class FileStream:
    def __init__(self, handle: BinaryIO, start: int) -> None:
        self._handle = handle
        self.start = start

    def chunks(self) -> Iterator[bytes]:
        read = self._handle.read
        while True:
            try:
                chunk = read(CHUNK)
            except OSError as exc:
                raise FetchError(f"cannot read {self._handle.name}: {exc.strerror}") from None
            if not chunk:
                return
            yield chunk


def _identity(stat: os.stat_result) -> str:
    return f"size={stat.st_size};mtime_ns={stat.st_mtime_ns}"


class LocalSource:
    def __init__(self, location: FileURI) -> None:
        self.root = Path(location.path)

    def list(self) -> Listing:
        try:
            stat = self.root.stat()
        except FileNotFoundError:
            raise FetchError(f"{self.root} not found") from None
        except PermissionError:
            raise FetchError(f"permission denied reading {self.root}") from None
        if self.root.is_file():
            file = RemoteFile(self.root.name, stat.st_size, _identity(stat), ref=str(self.root))
            return Listing(kind="file", files=(file,), default_name=name_from(self.root.name))
        files: list[RemoteFile] = []
        skipped: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=self._walk_error, followlinks=True):
            dirnames.sort()
            for filename in sorted(filenames):
                path = Path(dirpath, filename)
                rel = path.relative_to(self.root).as_posix()
                if not wanted(rel):
                    skipped.append(rel)
                    continue
                st = path.stat()
                files.append(RemoteFile(rel, st.st_size, _identity(st), ref=str(path)))
        if not files:
            raise FetchError(f"{self.root} holds no files")
        return Listing(
            kind="folder", files=tuple(files), default_name=name_from(self.root.name), skipped=tuple(skipped)
        )

    @staticmethod
    def _walk_error(exc: OSError) -> None:
        raise FetchError(f"cannot read {exc.filename}: {exc.strerror}")

    @contextmanager
    def open(self, file: RemoteFile, offset: int) -> Iterator[FileStream]:
        try:
            handle = open(file.ref, "rb")  # noqa: SIM115 (closed below, after the caller is done)
        except OSError as exc:
            raise FetchError(f"cannot read {file.ref}: {exc.strerror}") from None
        with handle:
            handle.seek(offset)
            yield FileStream(handle, offset)

    def checksum_applies(self, file: RemoteFile, checksum: Checksum) -> bool:
        return True
