"""Local servers and helpers for the `modelplane fetch` tests.

`FileServer` is a plain HTTP file server with the failure modes a fetch must survive (ranges,
dropped connections, slow bodies, stalls, error statuses). `FakeGcs` and `FakeHub` implement only
the Cloud Storage JSON API and Hugging Face Hub calls that fetch makes, as we read the public API
documentation: they test our client against our reading of those APIs, not the real services.
S3 is tested against moto's real S3-compatible server instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MODELPLANE = str(Path(sys.executable).with_name("modelplane"))

# Environment variables that would make a fetch read the developer's own credentials or proxies.
_SCRUBBED = re.compile(
    r"^(AWS_|S3_|GOOGLE_|GCE_|STORAGE_EMULATOR_HOST|HF_|HUGGING_FACE|MODELPLANE_|.*_PROXY$)", re.I
)


def fetch_env(**extra: str) -> dict[str, str]:
    """A clean environment for a fetch subprocess: none of the caller's cloud settings."""
    env = {k: v for k, v in os.environ.items() if not _SCRUBBED.match(k)}
    env.update(
        {
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    env.update(extra)
    return env


def fetch_args(uri: str, dest: Path, *extra: str) -> list[str]:
    """CLI arguments with test-friendly retry timing (the defaults wait seconds between tries)."""
    return [uri, str(dest), "--retry-wait", "0.05", "--timeout", "10", "--progress-interval", "0.2", *extra]


def run_fetch(
    uri: str, dest: Path, *extra: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `modelplane fetch` as the init container would: a process, exit code, stderr log."""
    return subprocess.run(
        [MODELPLANE, "fetch", *fetch_args(uri, dest, *extra)],
        env=dict(env) if env is not None else fetch_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_fetch(
    uri: str, dest: Path, *extra: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MODELPLANE, "fetch", *fetch_args(uri, dest, *extra)],
        env=dict(env) if env is not None else fetch_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def visible_tree(dest: Path) -> dict[str, bytes]:
    """DEST's files as the server would see them (hidden bookkeeping left out)."""
    out: dict[str, bytes] = {}
    if not dest.exists():
        return out
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = path.read_bytes()
    return out


def hidden_entries(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith(".")) if dest.exists() else []


def wait_for(condition: Callable[[], bool], *, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


# --------------------------------------------------------------------------- a tiny HTTP server


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str  # unquoted
    raw_path: str  # as sent, still quoted
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    ranged: bool = True  # honour Range (and If-Range)
    rate: float | None = None  # bytes per second
    drop_after: int | None = None  # close the connection after this many body bytes
    stall: float = 0.0  # seconds to wait before answering


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


class LocalServer:
    """A threading HTTP/1.1 server on 127.0.0.1 that hands each request to `app`."""

    def __init__(self, app: Callable[[Seen, bytes], Reply]) -> None:
        self.app = app
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self.release = threading.Event()  # ends stalls at shutdown
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._handle(self)

            do_POST = do_GET
            do_HEAD = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def seen(self, path_prefix: str = "", method: str = "GET") -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if s.path.startswith(path_prefix) and s.method == method]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        seen = Seen(
            method=handler.command,
            path=unquote(split.path),
            raw_path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in handler.headers.items()},
        )
        with self._lock:
            self.requests.append(seen)
        reply = self.app(seen, body)
        if reply.stall and self.release.wait(reply.stall):
            return
        try:
            self._send(handler, seen, reply)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _send(self, handler: BaseHTTPRequestHandler, seen: Seen, reply: Reply) -> None:
        status, body, headers = reply.status, reply.body, dict(reply.headers)
        start, end = 0, len(body)
        range_header = seen.headers.get("range")
        if status == 200 and reply.ranged:
            headers.setdefault("Accept-Ranges", "bytes")
            if_range = seen.headers.get("if-range")
            validators = {headers.get("ETag"), headers.get("Last-Modified")} - {None}
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
            if match and (if_range is None or if_range in validators):
                first = int(match.group(1))
                if first >= len(body):
                    handler.send_response(416)
                    handler.send_header("Content-Range", f"bytes */{len(body)}")
                    handler.send_header("Content-Length", "0")
                    handler.end_headers()
                    return
                last = int(match.group(2)) + 1 if match.group(2) else len(body)
                start, end = first, min(last, len(body))
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
        payload = body[start:end]
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if seen.method == "HEAD":
            return
        limit = len(payload) if reply.drop_after is None else min(reply.drop_after, len(payload))
        step = 64 * 1024
        sent = 0
        while sent < limit:
            chunk = payload[sent : min(sent + step, limit)]
            handler.wfile.write(chunk)
            handler.wfile.flush()
            sent += len(chunk)
            if reply.rate and self.release.wait(len(chunk) / reply.rate):
                break
        if sent < len(payload):  # drop the connection mid-body
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- a plain file server


@dataclass
class FileOptions:
    etag: bool = True
    last_modified: str | None = None
    status: int | None = None  # answer every request with this status
    fail_first: int = 0  # answer this many requests with 503 (Retry-After: 0) first
    ranged: bool = True
    rate: float | None = None
    drops: int = 0  # drop the connection after `drop_after` bytes this many times
    drop_after: int = 0
    stall: float = 0.0
    disposition: str | None = None


class FileServer(LocalServer):
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.options: dict[str, FileOptions] = {}
        super().__init__(self._app)

    def put(self, path: str, data: bytes, **options: Any) -> str:
        self.files[path] = data
        self.options[path] = FileOptions(**options)
        return f"{self.url}{path}"

    def _app(self, seen: Seen, body: bytes) -> Reply:
        data = self.files.get(seen.path)
        opts = self.options.get(seen.path, FileOptions())
        if opts.status:
            return json_reply({"error": f"status {opts.status} for {seen.path}"}, opts.status)
        if data is None:
            return Reply(404, b"no such file\n")
        if opts.fail_first:
            opts.fail_first -= 1
            return Reply(503, b"busy\n", {"Retry-After": "0"})
        headers: dict[str, str] = {"Content-Type": "application/octet-stream"}
        if opts.etag:
            headers["ETag"] = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        if opts.last_modified:
            headers["Last-Modified"] = opts.last_modified
        if opts.disposition:
            headers["Content-Disposition"] = f'attachment; filename="{opts.disposition}"'
        drop_after = None
        if opts.drops and seen.headers.get("range") != "bytes=0-0":
            opts.drops -= 1
            drop_after = opts.drop_after
        return Reply(
            200, data, headers, ranged=opts.ranged, rate=opts.rate, drop_after=drop_after, stall=opts.stall
        )


# --------------------------------------------------------------------------- Google Cloud Storage


@dataclass
class GcsObject:
    data: bytes
    generation: int
    md5_b64: str | None  # None: a composite object (no md5Hash)


class FakeGcs(LocalServer):
    """The JSON API calls fetch makes: list objects (paged), object metadata, media download,
    plus the OAuth2 token endpoint (JWT bearer) and the metadata server's token."""

    def __init__(self, *, token: str | None = None, page_size: int = 2) -> None:
        self.objects: dict[tuple[str, str], GcsObject] = {}
        self.buckets: set[str] = set()
        self.token = token  # the bearer token storage calls require; None: public
        self.page_size = page_size
        self.service_account_public_key: Any = None  # cryptography RSA public key
        self.service_account_email = ""
        self.rate: float | None = None
        self._generation = 1000
        super().__init__(self._app)

    def put(
        self, bucket: str, name: str, data: bytes, *, bad_md5: bool = False, composite: bool = False
    ) -> None:
        self.buckets.add(bucket)
        self._generation += 1
        digest = hashlib.md5(b"something else" if bad_md5 else data).digest()
        md5 = None if composite else base64.b64encode(digest).decode()
        self.objects[(bucket, name)] = GcsObject(data, self._generation, md5)

    def _metadata(self, bucket: str, name: str, obj: GcsObject) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "kind": "storage#object",
            "bucket": bucket,
            "name": name,
            "size": str(len(obj.data)),
            "generation": str(obj.generation),
            "crc32c": base64.b64encode(zlib.crc32(obj.data).to_bytes(4, "big")).decode(),
        }
        if obj.md5_b64:
            meta["md5Hash"] = obj.md5_b64
        return meta

    def _app(self, seen: Seen, body: bytes) -> Reply:
        if seen.method == "POST" and seen.path == "/token":
            return self._token_exchange(body)
        if seen.path == "/computeMetadata/v1/instance/service-accounts/default/token":
            if seen.headers.get("metadata-flavor") != "Google":
                return Reply(403, b"missing Metadata-Flavor\n")
            return json_reply({"access_token": self.token or "", "expires_in": 3599, "token_type": "Bearer"})
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o(?:/(.+))?", seen.raw_path)
        if not match:
            return json_reply({"error": {"code": 404, "message": "Not Found"}}, 404)
        if self.token and seen.headers.get("authorization") != f"Bearer {self.token}":
            return json_reply(
                {"error": {"code": 401, "message": "Anonymous caller does not have access"}}, 401
            )
        bucket = unquote(match.group(1))
        if bucket not in self.buckets:
            return json_reply(
                {"error": {"code": 404, "message": "The specified bucket does not exist."}}, 404
            )
        if match.group(2) is None:
            return self._list(bucket, seen.query)
        name = unquote(match.group(2))
        obj = self.objects.get((bucket, name))
        generation = seen.query.get("generation")
        if obj is None or (generation and generation != str(obj.generation)):
            return json_reply({"error": {"code": 404, "message": f"No such object: {bucket}/{name}"}}, 404)
        if seen.query.get("alt") == "media":
            return Reply(200, obj.data, {"Content-Type": "application/octet-stream"}, rate=self.rate)
        return json_reply(self._metadata(bucket, name, obj))

    def _list(self, bucket: str, query: dict[str, str]) -> Reply:
        prefix = query.get("prefix", "")
        names = sorted(n for (b, n) in self.objects if b == bucket and n.startswith(prefix))
        start = int(query.get("pageToken") or 0)
        page = names[start : start + self.page_size]
        data: dict[str, Any] = {
            "kind": "storage#objects",
            "items": [self._metadata(bucket, n, self.objects[(bucket, n)]) for n in page],
        }
        if start + self.page_size < len(names):
            data["nextPageToken"] = str(start + self.page_size)
        return json_reply(data)

    def _token_exchange(self, body: bytes) -> Reply:
        """Verify the RS256 JWT a service-account key signs, as Google's token endpoint does."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        form = dict(parse_qsl(body.decode()))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return json_reply({"error": "unsupported_grant_type"}, 400)
        try:
            header_b64, claims_b64, signature_b64 = form["assertion"].split(".")
            claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=="))
            signature = base64.urlsafe_b64decode(signature_b64 + "==")
            self.service_account_public_key.verify(
                signature, f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (KeyError, ValueError, InvalidSignature):
            return json_reply({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400)
        if claims.get("iss") != self.service_account_email or claims.get("aud") != f"{self.url}/token":
            return json_reply({"error": "invalid_grant", "error_description": "bad iss or aud"}, 400)
        if "devstorage" not in claims.get("scope", ""):
            return json_reply({"error": "invalid_scope"}, 400)
        return json_reply({"access_token": self.token, "expires_in": 3599, "token_type": "Bearer"})


def service_account_key(server: FakeGcs, email: str = "fetch@project.iam.gserviceaccount.com") -> str:
    """A fresh RSA service-account key whose public half the fake token endpoint trusts."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server.service_account_public_key = key.public_key()
    server.service_account_email = email
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "project",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": email,
            "token_uri": f"{server.url}/token",
        }
    )


# --------------------------------------------------------------------------- Hugging Face Hub


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    files: dict[str, bytes]
    lfs: set[str]  # paths stored in LFS (served through the CDN redirect)
    refs: dict[str, str]  # branch/tag -> commit sha
    gated: bool = False
    corrupt: set[str] = field(default_factory=set)  # paths served with wrong bytes


class FakeHub(LocalServer):
    """GET /api/{models,datasets}/{repo}/revision/{rev}?blobs=true and /{repo}/resolve/{sha}/{path};
    LFS files redirect to a CDN on another port, which rejects any Authorization header (as a
    pre-signed object-store URL does)."""

    def __init__(self, *, token: str | None = None) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.token = token
        self.rate: float | None = None
        self._cdn_blobs: dict[str, bytes] = {}
        self.cdn = LocalServer(self._cdn)
        super().__init__(self._app)

    def __enter__(self) -> FakeHub:
        self.cdn.__enter__()
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.cdn.__exit__(*exc)

    def add(
        self, repo_id: str, files: dict[str, bytes], *, lfs: set[str] | None = None, gated: bool = False
    ) -> str:
        sha = hashlib.sha1(
            repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode()
        )
        commit = sha.hexdigest()
        self.repos[repo_id] = HubRepo(dict(files), set(lfs or ()), {"main": commit, commit: commit}, gated)
        return commit

    def _authorized(self, repo: HubRepo, seen: Seen) -> bool:
        return not repo.gated or seen.headers.get("authorization") == f"Bearer {self.token}"

    def _app(self, seen: Seen, body: bytes) -> Reply:
        api = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/revision/(.+)", seen.raw_path)
        if api:
            return self._info(api.group(2), unquote(api.group(3)), seen)
        resolve = re.fullmatch(r"/(?:datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", seen.raw_path)
        if resolve:
            return self._resolve(resolve.group(1), unquote(resolve.group(2)), unquote(resolve.group(3)), seen)
        return json_reply({"error": "Not Found"}, 404)

    def _repo_error(self, repo_id: str) -> Reply:
        message = f"Repository Not Found for url: /api/models/{repo_id}."
        return json_reply(
            {"error": message}, 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": message}
        )

    def _info(self, repo_id: str, revision: str, seen: Seen) -> Reply:
        repo = self.repos.get(repo_id)
        if repo is None or not self._authorized(repo, seen):
            return self._repo_error(repo_id)
        commit = repo.refs.get(revision)
        if commit is None:
            return json_reply(
                {"error": f"Invalid rev id: {revision}"}, 404, {"X-Error-Code": "RevisionNotFound"}
            )
        siblings = []
        for path, data in sorted(repo.files.items()):
            entry: dict[str, Any] = {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(data)}
            if path in repo.lfs:
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
                entry["blobId"] = git_blob_sha1(pointer.encode())
                entry["size"] = len(data)
                entry["lfs"] = {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            siblings.append(entry)
        return json_reply({"id": repo_id, "sha": commit, "siblings": siblings})

    def _resolve(self, repo_id: str, revision: str, path: str, seen: Seen) -> Reply:
        repo = self.repos.get(repo_id)
        if repo is None or not self._authorized(repo, seen):
            return self._repo_error(repo_id)
        if revision not in repo.refs or path not in repo.files:
            return json_reply({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
        data = repo.files[path]
        if path in repo.corrupt:
            data = bytes(b ^ 0xFF for b in data)
        if path in repo.lfs:
            self._cdn_blobs[hashlib.sha256(repo.files[path]).hexdigest()] = data
            location = (
                f"http://localhost:{self.cdn.port}/blobs/{hashlib.sha256(repo.files[path]).hexdigest()}?sig=x"
            )
            return Reply(302, b"", {"Location": location, "X-Linked-Size": str(len(data))})
        return Reply(
            200, data, {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": revision}, rate=self.rate
        )

    def _cdn(self, seen: Seen, body: bytes) -> Reply:
        if "authorization" in seen.headers:
            return Reply(400, b"<Error><Message>Only one auth mechanism allowed</Message></Error>")
        match = re.fullmatch(r"/blobs/([0-9a-f]{64})", seen.path)
        data = self._cdn_blobs.get(match.group(1)) if match else None
        if data is None:
            return Reply(404, b"")
        return Reply(200, data, {"ETag": f'"{match.group(1) if match else ""}"'}, rate=self.rate)
