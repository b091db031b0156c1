"""Parse the model URI into a typed location, and show it without secrets.

Pure: no I/O. Each scheme gets its own small dataclass so the sources never re-parse strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

from modelplane_runtime.fetch.errors import UsageError

SCHEMES = ("file://", "http://", "https://", "s3://", "gs://", "hf://")

# S3 and GCS bucket names: lowercase letters, digits, dots, dashes, underscores (GCS), 3-222 chars.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$")
# Hugging Face repo ids: namespace/name, letters, digits, '-', '_', '.'.
_HF_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileURI:
    path: str  # absolute local path


@dataclass(frozen=True)
class HttpURI:
    url: str  # without the fragment
    sha256: str | None  # from a `#sha256=<hex>` fragment, pip style


@dataclass(frozen=True)
class BucketURI:
    scheme: str  # "s3" or "gs"
    bucket: str
    key: str  # "" for the whole bucket; may end with "/"


@dataclass(frozen=True)
class HfURI:
    repo_type: str  # "model" or "dataset"
    repo_id: str  # namespace/name
    revision: str  # branch, tag or commit; "main" by default
    path: str  # "" for the whole repository


Location = FileURI | HttpURI | BucketURI | HfURI


def parse_uri(uri: str) -> Location:
    """Parse a model URI; raise UsageError naming what is wrong with it."""
    if not uri or uri != uri.strip():
        raise UsageError(f"invalid URI {uri!r}: empty or surrounded by spaces")
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise UsageError(
            f"invalid URI {uri!r}: no scheme; use one of {', '.join(SCHEMES)} (e.g. file://{uri})"
            if uri.startswith("/")
            else f"invalid URI {uri!r}: no scheme; use one of {', '.join(SCHEMES)}"
        )
    if scheme == "pvc":
        raise UsageError(
            f"{uri}: pvc:// is not fetched; the operator mounts the claim at the model repository "
            "path and the server reads it there"
        )
    if scheme == "file":
        return _parse_file(uri, rest)
    if scheme in ("http", "https"):
        return _parse_http(uri)
    if scheme in ("s3", "gs"):
        return _parse_bucket(uri, scheme, rest)
    if scheme == "hf":
        return _parse_hf(uri, rest)
    raise UsageError(f"unsupported scheme {scheme}:// in {uri!r}; supported: {', '.join(SCHEMES)}")


def _parse_file(uri: str, rest: str) -> FileURI:
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost") or not slash:
        raise UsageError(f"invalid URI {uri!r}: a file URI is file:///absolute/path")
    path = unquote("/" + path)
    if ".." in PurePosixPath(path).parts:
        raise UsageError(f"invalid URI {uri!r}: '..' is not allowed in the path")
    return FileURI(path=str(PurePosixPath(path)))


def _parse_http(uri: str) -> HttpURI:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise UsageError(f"invalid URI {display(uri)!r}: no host")
    sha256 = None
    if parts.fragment:
        algo, _, digest = parts.fragment.partition("=")
        if algo != "sha256" or not _SHA256.match(digest.lower()):
            raise UsageError(
                f"invalid URI {display(uri)!r}: the only fragment understood is #sha256=<64 hex digits>"
            )
        sha256 = digest.lower()
    return HttpURI(url=urlunsplit(parts._replace(fragment="")), sha256=sha256)


def _parse_bucket(uri: str, scheme: str, rest: str) -> BucketURI:
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise UsageError(f"invalid URI {uri!r}: {bucket!r} is not a valid bucket name")
    if any(part in (".", "..") for part in key.split("/")):
        raise UsageError(f"invalid URI {uri!r}: '.' and '..' are not allowed in the object path")
    return BucketURI(scheme=scheme, bucket=bucket, key=key)


def _parse_hf(uri: str, rest: str) -> HfURI:
    """hf://[datasets/]<namespace>/<name>[@revision][/path]; a revision with '/' is URL-encoded."""
    parts = rest.split("/")
    repo_type = "model"
    if parts[0] in ("datasets", "models") and len(parts) >= 3:
        repo_type = "dataset" if parts[0] == "datasets" else "model"
        parts = parts[1:]
    if len(parts) < 2:
        raise UsageError(f"invalid URI {uri!r}: expected hf://<namespace>/<repo>[@revision][/path]")
    namespace, name = parts[0], parts[1]
    name, _, revision = name.partition("@")
    revision = unquote(revision) if revision else "main"
    for part in (namespace, name):
        if not _HF_PART.match(part):
            raise UsageError(f"invalid URI {uri!r}: {part!r} is not a valid Hugging Face repository name")
    path = "/".join(p for p in parts[2:] if p)
    if any(p in (".", "..") for p in path.split("/")):
        raise UsageError(f"invalid URI {uri!r}: '.' and '..' are not allowed in the path")
    return HfURI(repo_type=repo_type, repo_id=f"{namespace}/{name}", revision=revision, path=path)


def display(uri: str) -> str:
    """The URI as logs and errors show it: no user:password, no query (pre-signed URLs carry keys)."""
    if not uri.lower().startswith(("http://", "https://")):
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    query = "…" if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))
