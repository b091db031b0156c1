"""hf:// through the Hugging Face Hub HTTP API (no huggingface_hub dependency: two endpoints do).

  GET {HF_ENDPOINT}/api/models/{repo}/revision/{rev}?blobs=true   -> commit sha + files, sizes,
                                                                      git blob ids, LFS sha256
  GET {HF_ENDPOINT}/{repo}/resolve/{commit}/{path}                 -> the bytes (redirects to a CDN)

Files are downloaded at the commit the revision resolved to, so a branch moving mid-fetch cannot
mix two commits. LFS files are checked against their sha256, small files against their git blob id.
HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) is sent to the Hub only, never to the CDN it redirects to.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from modelplane_runtime.fetch.errors import FetchError
from modelplane_runtime.fetch.http_client import HttpStream, ranged_get, request
from modelplane_runtime.fetch.layout import name_from, wanted
from modelplane_runtime.fetch.listing import Checksum, Listing, RemoteFile
from modelplane_runtime.fetch.uris import HfURI


def hf_token() -> str:
    return (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip()


class HfSource:
    def __init__(self, location: HfURI, *, timeout: float) -> None:
        self.location = location
        self.timeout = timeout
        self.endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        token = hf_token()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.access_hint = (
            "access denied, check HF_TOKEN in credentialsSecret and that it may read this repository"
            if token
            else "repository not found, or private/gated: set HF_TOKEN in credentialsSecret"
        )
        kind = "datasets" if location.repo_type == "dataset" else "models"
        self.api = f"{self.endpoint}/api/{kind}/{location.repo_id}"
        self.files_base = f"{self.endpoint}/{'datasets/' if kind == 'datasets' else ''}{location.repo_id}"
        self.uri = f"hf://{'datasets/' if kind == 'datasets' else ''}{location.repo_id}"
        self.commit = ""

    def list(self) -> Listing:
        loc = self.location
        url = f"{self.api}/revision/{quote(loc.revision, safe='')}?blobs=true"
        what = f"{self.uri}@{loc.revision}"
        with request(
            url, what=what, headers=self.headers, timeout=self.timeout, access_hint=self.access_hint
        ) as resp:
            info = resp.json()
        if not isinstance(info, dict) or not isinstance(info.get("siblings"), list):
            raise FetchError(f"{what}: unexpected answer from {self.endpoint} (no file list)")
        self.commit = str(info.get("sha") or loc.revision)
        siblings: list[dict[str, Any]] = [
            s for s in info["siblings"] if isinstance(s, dict) and "rfilename" in s
        ]
        note = f"revision {loc.revision} is commit {self.commit}"
        if loc.path:
            exact = [s for s in siblings if s["rfilename"] == loc.path]
            if exact:
                name = loc.path.rsplit("/", 1)[-1]
                file = self._file(name, exact[0])
                return Listing(kind="file", files=(file,), default_name=name_from(name), note=note)
        prefix = f"{loc.path}/" if loc.path else ""
        files: list[RemoteFile] = []
        skipped: list[str] = []
        for sibling in siblings:
            path = sibling["rfilename"]
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :]
            if not wanted(rel):
                skipped.append(rel)
                continue
            files.append(self._file(rel, sibling))
        if not files:
            where = f"{what}/{loc.path}" if loc.path else what
            raise FetchError(f"{where} not found (no such file or folder in the repository)")
        default = name_from(loc.path or loc.repo_id.rsplit("/", 1)[-1])
        return Listing(
            kind="folder", files=tuple(files), default_name=default, note=note, skipped=tuple(skipped)
        )

    @staticmethod
    def _file(rel: str, sibling: dict[str, Any]) -> RemoteFile:
        lfs = sibling.get("lfs") if isinstance(sibling.get("lfs"), dict) else None
        checksums: tuple[Checksum, ...] = ()
        identity = None
        size = sibling.get("size")
        if lfs and lfs.get("sha256"):
            checksums = (Checksum("sha256", str(lfs["sha256"])),)
            identity = f"sha256:{lfs['sha256']}"
            size = lfs.get("size", size)
        elif sibling.get("blobId"):
            checksums = (Checksum("git-blob-sha1", str(sibling["blobId"])),)
            identity = f"git-blob:{sibling['blobId']}"
        return RemoteFile(
            path=rel,
            size=int(size) if size is not None else None,
            identity=identity,
            checksums=checksums,
            ref=str(sibling["rfilename"]),
        )

    @contextmanager
    def open(self, file: RemoteFile, offset: int) -> Iterator[HttpStream]:
        url = f"{self.files_base}/resolve/{quote(self.commit, safe='')}/{quote(file.ref)}"
        with ranged_get(
            url,
            what=f"{self.uri}/{file.ref}",
            offset=offset,
            timeout=self.timeout,
            headers=self.headers,
            access_hint=self.access_hint,
        ) as stream:
            yield stream

    def checksum_applies(self, file: RemoteFile, checksum: Checksum) -> bool:
        return True
