"""gs:// through the Cloud Storage JSON API over HTTPS (no google-cloud SDK: two endpoints do).

Credentials, first found wins:
  GOOGLE_OAUTH_ACCESS_TOKEN          an OAuth2 access token, sent as is;
  GOOGLE_APPLICATION_CREDENTIALS_JSON  a service-account key's JSON (the Secret's value);
  GOOGLE_APPLICATION_CREDENTIALS       a path to that JSON (a mounted Secret);
  the GKE/GCE metadata server          Workload Identity (GCE_METADATA_HOST overrides the host);
  none                                 anonymous, for public buckets.
STORAGE_EMULATOR_HOST points at an emulator (fake-gcs-server) and skips the metadata server
unless GCE_METADATA_HOST is set too.
A service-account key is exchanged for a token with an RS256-signed JWT (`cryptography`).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from modelplane_runtime.fetch.errors import FetchError
from modelplane_runtime.fetch.http_client import HttpStream, ranged_get, request
from modelplane_runtime.fetch.layout import name_from, wanted
from modelplane_runtime.fetch.listing import Checksum, Listing, RemoteFile
from modelplane_runtime.fetch.uris import BucketURI

SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
ACCESS_HINT = "access denied, check the Google credentials in credentialsSecret"


def api_base() -> str:
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
    if not emulator:
        return "https://storage.googleapis.com"
    return emulator if "://" in emulator else f"http://{emulator}"


@dataclass
class _Token:
    value: str
    expires_at: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(key: dict[str, Any], now: float) -> str:
    """The JWT-bearer assertion for a service-account key (RFC 7523, Google's OAuth2 flavour)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    header = {"alg": "RS256", "typ": "JWT", "kid": key.get("private_key_id", "")}
    claims = {
        "iss": key["client_email"],
        "scope": SCOPE,
        "aud": key.get("token_uri", DEFAULT_TOKEN_URI),
        "iat": int(now),
        "exp": int(now) + 3600,
    }
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    try:
        private_key = serialization.load_pem_private_key(str(key["private_key"]).encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise FetchError(f"the service-account key's private_key cannot be read ({exc})") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise FetchError("the service-account key is not an RSA key")
    signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


class Credentials:
    """Produces the Authorization header, refreshing a token five minutes before it expires."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self._key = self._load_key()
        self.kind = self._kind()

    @staticmethod
    def _load_key() -> dict[str, Any] | None:
        text = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS_JSON", "").strip()
        origin = "GOOGLE_APPLICATION_CREDENTIALS_JSON"
        if not text and os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            path = os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
            origin = path
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise FetchError(
                    f"cannot read GOOGLE_APPLICATION_CREDENTIALS {path}: {exc.strerror}"
                ) from None
        if not text:
            return None
        try:
            key = json.loads(text)
        except ValueError:
            raise FetchError(f"{origin} is not valid JSON") from None
        if not isinstance(key, dict) or key.get("type") != "service_account":
            raise FetchError(f"{origin} must be a service-account key (type service_account)")
        missing = [f for f in ("client_email", "private_key") if not key.get(f)]
        if missing:
            raise FetchError(f"{origin} lacks {', '.join(missing)}")
        return key

    def _kind(self) -> str:
        if os.environ.get("GOOGLE_OAUTH_ACCESS_TOKEN"):
            return "access-token"
        if self._key is not None:
            return "service-account"
        if os.environ.get("STORAGE_EMULATOR_HOST") and not os.environ.get("GCE_METADATA_HOST"):
            return "anonymous"
        return "metadata-server"

    def headers(self) -> dict[str, str]:
        if self.kind == "access-token":
            return {"Authorization": f"Bearer {os.environ['GOOGLE_OAUTH_ACCESS_TOKEN'].strip()}"}
        if self.kind == "anonymous":
            return {}
        with self._lock:
            if self._token is None or time.time() > self._token.expires_at - 300:
                self._token = self._service_account() if self.kind == "service-account" else self._metadata()
                if self._token is None:
                    self.kind = "anonymous"
                    return {}
            return {"Authorization": f"Bearer {self._token.value}"}

    def _service_account(self) -> _Token:
        assert self._key is not None
        now = time.time()
        token_uri = self._key.get("token_uri", DEFAULT_TOKEN_URI)
        body = urlencode(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": signed_jwt(self._key, now),
            }
        ).encode()
        try:
            with request(
                token_uri,
                what="token endpoint",
                data=body,
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=self.timeout,
            ) as resp:
                data = resp.json()
        except FetchError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                raise FetchError(
                    f"the service-account key was rejected by {token_uri} ({exc.cause}), check credentialsSecret",
                    status=exc.status,
                ) from None
            raise
        if not isinstance(data, dict) or "access_token" not in data:
            raise FetchError("the token endpoint answered without an access_token")
        return _Token(data["access_token"], now + float(data.get("expires_in", 3600)))

    def _metadata(self) -> _Token | None:
        """Workload Identity; off Google Cloud the lookup fails fast and we go anonymous."""
        host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
        url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
        now = time.time()
        try:
            with request(
                url,
                what="metadata server",
                headers={"Metadata-Flavor": "Google"},
                timeout=min(self.timeout, 3.0),
            ) as resp:
                data = resp.json()
        except FetchError:
            return None
        if not isinstance(data, dict) or "access_token" not in data:
            return None
        return _Token(data["access_token"], now + float(data.get("expires_in", 3600)))


def _md5_hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


class GcsSource:
    def __init__(self, location: BucketURI, *, timeout: float) -> None:
        self.location = location
        self.timeout = timeout
        self.base = api_base()
        self.credentials = Credentials(timeout)

    def _object_url(self, name: str) -> str:
        return f"{self.base}/storage/v1/b/{quote(self.location.bucket, safe='')}/o/{quote(name, safe='')}"

    def _get_json(self, url: str, what: str) -> Any:
        with request(
            url, what=what, headers=self.credentials.headers(), timeout=self.timeout, access_hint=self._hint()
        ) as resp:
            return resp.json()

    def _hint(self) -> str:
        if self.credentials.kind == "anonymous":
            return "access denied: the bucket is not public; set Google credentials in credentialsSecret"
        return ACCESS_HINT

    def list(self) -> Listing:
        bucket, key = self.location.bucket, self.location.key
        uri = f"gs://{bucket}/{key}"
        if key and not key.endswith("/"):
            try:
                meta = self._get_json(self._object_url(key), uri)
            except FetchError as exc:
                if exc.status != 404:
                    raise
            else:
                name = key.rsplit("/", 1)[-1]
                file = self._file(name, meta)
                return Listing(kind="file", files=(file,), default_name=name_from(name))
        prefix = key if not key or key.endswith("/") else key + "/"
        files: list[RemoteFile] = []
        skipped: list[str] = []
        page_token = ""
        while True:
            query = {"prefix": prefix, "fields": "items(name,size,md5Hash,crc32c,generation),nextPageToken"}
            if page_token:
                query["pageToken"] = page_token
            url = f"{self.base}/storage/v1/b/{quote(bucket, safe='')}/o?{urlencode(query)}"
            page = self._get_json(url, f"gs://{bucket}")
            for item in page.get("items", []):
                rel = item["name"][len(prefix) :]
                if not wanted(rel):
                    skipped.append(rel)
                    continue
                files.append(self._file(rel, item))
            page_token = page.get("nextPageToken", "")
            if not page_token:
                break
        if not files:
            raise FetchError(
                f"{uri} not found (no object with that name and no objects under {prefix or '/'})"
            )
        default = name_from(prefix.rstrip("/") or bucket)
        return Listing(kind="folder", files=tuple(files), default_name=default, skipped=tuple(skipped))

    @staticmethod
    def _file(rel: str, item: dict[str, Any]) -> RemoteFile:
        checksums: tuple[Checksum, ...] = ()
        if item.get("md5Hash"):  # absent for composite objects; crc32c alone is not checked
            checksums = (Checksum("md5", _md5_hex(item["md5Hash"])),)
        generation = str(item.get("generation", ""))
        return RemoteFile(
            path=rel,
            size=int(item["size"]) if "size" in item else None,
            identity=f"generation:{generation};crc32c:{item.get('crc32c', '')}",
            checksums=checksums,
            ref=f"{item['name']}\n{generation}",
        )

    @contextmanager
    def open(self, file: RemoteFile, offset: int) -> Iterator[HttpStream]:
        name, _, generation = file.ref.partition("\n")
        query = {"alt": "media"}
        if generation:
            query["generation"] = generation  # the listed version, even if it is replaced meanwhile
        url = f"{self._object_url(name)}?{urlencode(query)}"
        with ranged_get(
            url,
            what=f"gs://{self.location.bucket}/{name}",
            offset=offset,
            timeout=self.timeout,
            headers=self.credentials.headers(),
            access_hint=self._hint(),
        ) as stream:
            yield stream

    def checksum_applies(self, file: RemoteFile, checksum: Checksum) -> bool:
        return True
