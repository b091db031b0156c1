"""A small HTTP client on the standard library, and the http(s):// source.

GCS and Hugging Face are plain HTTPS APIs, so they use this client too instead of their SDKs:
the runtime image stays small and every request is one we can read. urllib brings proxies from
HTTPS_PROXY/NO_PROXY, redirects, and CA bundles from SSL_CERT_FILE.
"""

from __future__ import annotations

import email.message
import email.utils
import http.client
import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from modelplane_runtime.fetch.errors import ACCESS_DENIED, FetchError, status_error
from modelplane_runtime.fetch.layout import name_from
from modelplane_runtime.fetch.listing import CHUNK, Checksum, Listing, RemoteFile
from modelplane_runtime.fetch.uris import HttpURI, display

USER_AGENT = "modelplane-fetch/0.1"


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry Authorization to another host: a CDN or a pre-signed
    object-store URL must not see the token (S3 even rejects a request with two kinds of auth)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_Redirects())


@dataclass
class Response:
    status: int
    headers: email.message.Message
    url: str  # after redirects
    raw: http.client.HTTPResponse

    def read(self) -> bytes:
        try:
            return self.raw.read()
        except (OSError, http.client.HTTPException) as exc:
            raise network_error(exc, display(self.url)) from None

    def json(self) -> Any:
        try:
            return json.loads(self.read())
        except ValueError:
            raise FetchError(f"{display(self.url)} answered with invalid JSON") from None

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


def _server_message(body: bytes) -> str:
    """A short reason from an error body (JSON `error`/`message`, S3-style XML, or text)."""
    text = body[:4000].decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        match = re.search(r"<Message>(.*?)</Message>", text, re.S)
        text = match.group(1) if match else text
    else:
        if isinstance(data, dict):
            err = data.get("error", data.get("message", ""))
            if isinstance(err, dict):
                err = err.get("message", "")
            if data.get("error_description"):  # OAuth2 token endpoints
                err = f"{err}: {data['error_description']}"
            text = str(err)
    text = " ".join(text.split())
    return text[:200]


def request(
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    method: str | None = None,
    timeout: float,
    access_hint: str = ACCESS_DENIED,
) -> Response:
    """Send one request; non-2xx answers and network failures become FetchError.

    The caller closes `Response.raw` (use `with`)."""
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("User-Agent", USER_AGENT)
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            detail = _server_message(exc.read())
        except (OSError, http.client.HTTPException):
            detail = ""
        finally:
            exc.close()
        error = status_error(exc.code, what=what, detail=detail, access_hint=access_hint)
        error.retry_after = _retry_after(exc.headers)
        raise error from None
    except urllib.error.URLError as exc:
        raise network_error(exc.reason, display(url)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise network_error(exc, display(url)) from None
    return Response(status=resp.status, headers=resp.headers, url=resp.url, raw=resp)


def network_error(reason: object, where: str) -> FetchError:
    """Name the network failure: DNS, refused, timeout, TLS, reset."""
    host = urlsplit(where).hostname or where
    if isinstance(reason, socket.gaierror):
        return FetchError(f"DNS lookup failed for {host} ({reason.strerror})", transient=True)
    if isinstance(reason, TimeoutError | socket.timeout):
        return FetchError(f"timed out talking to {host}", transient=True)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return FetchError(f"TLS certificate of {host} not trusted ({reason.verify_message})")
    if isinstance(reason, ssl.SSLError):
        return FetchError(f"TLS error with {host} ({reason})", transient=True)
    if isinstance(reason, ConnectionRefusedError):
        return FetchError(f"connection refused by {host}", transient=True)
    if isinstance(reason, ConnectionError | http.client.HTTPException):
        return FetchError(f"connection to {host} broken ({type(reason).__name__})", transient=True)
    return FetchError(f"cannot reach {host} ({reason})", transient=True)


def _retry_after(headers: email.message.Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def content_range_start(headers: email.message.Message) -> int | None:
    """`Content-Range: bytes 100-199/200` -> 100."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def content_range_total(headers: email.message.Message) -> int | None:
    match = re.match(r"bytes \d+-\d+/(\d+)", headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


class HttpStream:
    """Chunks of a ranged GET; `start` is where the server's bytes begin."""

    def __init__(self, response: Response, start: int, where: str) -> None:
        self.response = response
        self.start = start
        self._where = where

    def chunks(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self.response.raw.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise network_error(exc, self._where) from None
            if not chunk:
                return
            yield chunk


@contextmanager
def ranged_get(
    url: str,
    *,
    what: str,
    offset: int,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    if_range: str | None = None,
    access_hint: str = ACCESS_DENIED,
) -> Iterator[HttpStream]:
    """GET from `offset`. A 200 to a range request means the server sent everything (or the
    validator changed): the stream then starts at 0 and the caller starts the file over."""
    all_headers = dict(headers or {})
    if offset:
        all_headers["Range"] = f"bytes={offset}-"
        if if_range:
            all_headers["If-Range"] = if_range
    try:
        resp = request(url, what=what, headers=all_headers, timeout=timeout, access_hint=access_hint)
    except FetchError as exc:
        if offset and exc.status == 416:
            # The range starts at or past the end: the partial file is stale, start over.
            resp = request(url, what=what, headers=headers, timeout=timeout, access_hint=access_hint)
        else:
            raise
    with resp.raw:
        start = 0
        if resp.status == 206:
            start = content_range_start(resp.headers) or 0
        yield HttpStream(resp, start, display(url))


def _filename(resp: Response, url: str) -> str:
    """Content-Disposition's filename, else the requested URL's last segment (not the URL it
    redirected to: release downloads and CDNs end in opaque blob ids), else the final URL's."""
    disposition = resp.headers.get_param("filename", header="Content-Disposition")
    if isinstance(disposition, str) and disposition.strip():
        return disposition.strip().replace("\\", "/").rsplit("/", 1)[-1]
    for candidate in (url, resp.url):
        name = unquote(urlsplit(candidate).path).rstrip("/").rsplit("/", 1)[-1]
        if name:
            return name
    return ""


class HttpSource:
    """One file over http(s). Identity is the ETag or Last-Modified (None if neither is sent:
    then the file is fetched every time); a `#sha256=` fragment pins the content."""

    def __init__(self, location: HttpURI, *, timeout: float, authorization: str | None = None) -> None:
        self.location = location
        self.timeout = timeout
        self.headers = {"Authorization": authorization} if authorization else {}
        self.what = display(location.url)

    def list(self) -> Listing:
        # A one-byte GET rather than HEAD: pre-signed URLs are signed for GET only.
        with ranged_get(
            self.location.url, what=self.what, offset=0, timeout=self.timeout, headers=self._probe_headers()
        ) as stream:
            resp = stream.response
            size = content_range_total(resp.headers) if resp.status == 206 else None
            if size is None and resp.status == 200 and resp.headers.get("Content-Length"):
                size = int(resp.headers["Content-Length"])
            etag = resp.headers.get("ETag")
            modified = resp.headers.get("Last-Modified")
            filename = _filename(resp, self.location.url)
        if not filename or filename in (".", ".."):
            raise FetchError(
                f"cannot tell a file name from {self.what}; use a URL that ends in the file name"
            )
        identity = None
        checksums: tuple[Checksum, ...] = ()
        if self.location.sha256:
            identity = f"sha256:{self.location.sha256}"
            checksums = (Checksum("sha256", self.location.sha256),)
        elif etag and not etag.startswith("W/"):
            identity = f"etag:{etag}"
        elif modified:
            identity = f"last-modified:{modified}"
        file = RemoteFile(
            path=filename, size=size, identity=identity, checksums=checksums, ref=self.location.url
        )
        return Listing(kind="file", files=(file,), default_name=name_from(filename))

    def _probe_headers(self) -> dict[str, str]:
        return {**self.headers, "Range": "bytes=0-0"}

    @contextmanager
    def open(self, file: RemoteFile, offset: int) -> Iterator[HttpStream]:
        validator = None
        if file.identity and file.identity.startswith(("etag:", "last-modified:")):
            validator = file.identity.split(":", 1)[1]
        with ranged_get(
            file.ref,
            what=self.what,
            offset=offset,
            timeout=self.timeout,
            headers=self.headers,
            if_range=validator,
        ) as stream:
            yield stream

    def checksum_applies(self, file: RemoteFile, checksum: Checksum) -> bool:
        return True
