"""s3:// through boto3, so every AWS credential source works (env keys, IRSA/web identity, pod
identity, instance profiles) and so do S3-compatible stores (MinIO, Ceph, R2) via AWS_ENDPOINT_URL.

Environment read (all standard boto3, plus KServe's S3_* names so existing Secrets keep working):
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_CA_BUNDLE; S3_ENDPOINT (host[:port] or URL),
S3_USE_HTTPS ("0" for http), S3_VERIFY_SSL ("0" to skip verification). Without any credentials
the requests go unsigned, which is how public buckets are read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelplane_runtime.fetch.errors import ACCESS_DENIED, FetchError
from modelplane_runtime.fetch.layout import name_from, wanted
from modelplane_runtime.fetch.listing import CHUNK, Checksum, Listing, RemoteFile
from modelplane_runtime.fetch.uris import BucketURI

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {
    "403",
    "401",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "AccountProblem",
}
_TRANSIENT = {
    "500",
    "502",
    "503",
    "504",
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
}


def _endpoint_from_env() -> tuple[str | None, bool | None]:
    """KServe-style S3_ENDPOINT; boto3 reads AWS_ENDPOINT_URL(_S3) itself, which wins."""
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return None, None
    endpoint = os.environ.get("S3_ENDPOINT", "").strip()
    verify = None if os.environ.get("S3_VERIFY_SSL", "1") != "0" else False
    if not endpoint:
        return None, verify
    if "://" not in endpoint:
        scheme = "http" if os.environ.get("S3_USE_HTTPS", "1") == "0" else "https"
        endpoint = f"{scheme}://{endpoint}"
    return endpoint, verify


class S3Stream:
    def __init__(self, body: Any, start: int, where: str) -> None:
        self._body = body
        self.start = start
        self._where = where

    def chunks(self) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        try:
            yield from self._body.iter_chunks(CHUNK)
        except (BotoCoreError, OSError) as exc:
            raise FetchError(
                f"connection to {self._where} broken ({type(exc).__name__})", transient=True
            ) from None


class S3Source:
    def __init__(self, location: BucketURI, *, timeout: float) -> None:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        self.location = location
        session = boto3.session.Session()
        self.anonymous = session.get_credentials() is None
        endpoint, verify = _endpoint_from_env()
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "max_attempts": 3},
            signature_version=UNSIGNED if self.anonymous else None,
            user_agent_extra="modelplane-fetch",
        )
        self.client = session.client("s3", endpoint_url=endpoint, verify=verify, config=config)
        self.endpoint = self.client.meta.endpoint_url
        hint = (
            "bucket is not public; set AWS credentials in credentialsSecret"
            if self.anonymous
            else ACCESS_DENIED
        )
        self.access_hint = hint

    def _error(self, exc: Exception, what: str) -> FetchError:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            message = str(err.get("Message", "") or "").strip()
            detail = f"{code}: {message}" if message and message != code else code
            if code in _NOT_FOUND or status == 404:
                return FetchError(f"{what} not found ({detail or 'HTTP 404'})", status=404)
            if code in _DENIED or status in (401, 403):
                return FetchError(f"{self.access_hint} ({detail or f'HTTP {status}'})", status=status or 403)
            if code in ("PreconditionFailed", "412") or status == 412:
                return FetchError(f"{what} changed while it was being fetched; fetch again", status=412)
            if code in _TRANSIENT or status >= 500:
                return FetchError(f"{what}: {detail or f'HTTP {status}'}", transient=True, status=status)
            return FetchError(f"{what}: {detail or f'HTTP {status}'}", status=status)
        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
            return FetchError(f"timed out talking to {self.endpoint}", transient=True)
        if isinstance(exc, EndpointConnectionError):
            return FetchError(f"cannot reach {self.endpoint} ({exc})", transient=True)
        return FetchError(f"{what}: {type(exc).__name__}: {exc}", transient=True)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, what) from None

    def list(self) -> Listing:
        bucket, key = self.location.bucket, self.location.key
        uri = f"s3://{bucket}/{key}"
        denied: FetchError | None = None
        if key and not key.endswith("/"):
            try:
                head = self._call(uri, self.client.head_object, Bucket=bucket, Key=key)
            except FetchError as exc:
                # 404: maybe a prefix ("folder"). 403: no read access, or (without s3:ListBucket)
                # a missing key; the listing below tells which, else the denial is the answer.
                if exc.status not in (404, 403):
                    raise
                denied = exc if exc.status == 403 else None
            else:
                name = key.rsplit("/", 1)[-1]
                file = self._file(
                    name, key, int(head["ContentLength"]), head.get("ETag", ""), head.get("VersionId")
                )
                return Listing(kind="file", files=(file,), default_name=name_from(name))
        prefix = key if not key or key.endswith("/") else key + "/"
        files: list[RemoteFile] = []
        skipped: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix) :]
                    if not wanted(rel):
                        skipped.append(rel)
                        continue
                    files.append(self._file(rel, obj["Key"], int(obj["Size"]), obj.get("ETag", ""), None))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, uri) from None  # a listing error has the body HEAD lacks
        if not files and denied is not None:
            raise denied
        if not files:
            raise FetchError(
                f"{uri} not found (no object with that key and no objects under {prefix or '/'})"
            )
        default = name_from(prefix.rstrip("/") or bucket)
        return Listing(kind="folder", files=tuple(files), default_name=default, skipped=tuple(skipped))

    @staticmethod
    def _file(rel: str, key: str, size: int, etag: str, version_id: str | None) -> RemoteFile:
        etag = etag.strip('"')
        checksums = (Checksum("md5", etag),) if _MD5_ETAG.match(etag) else ()
        identity = f"etag:{etag}" + (f";version:{version_id}" if version_id else "")
        return RemoteFile(path=rel, size=size, identity=identity, checksums=checksums, ref=key)

    @contextmanager
    def open(self, file: RemoteFile, offset: int) -> Iterator[S3Stream]:
        bucket = self.location.bucket
        what = f"s3://{bucket}/{file.ref}"
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": file.ref}
        etag = (file.identity or "").removeprefix("etag:").split(";", 1)[0]
        if etag:
            kwargs["IfMatch"] = f'"{etag}"'
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        response = self._call(what, self.client.get_object, **kwargs)
        body = response["Body"]
        start = 0
        served = re.match(r"bytes (\d+)-", str(response.get("ContentRange", "")))
        if offset and served:
            start = int(served.group(1))
        try:
            yield S3Stream(body, start, self.endpoint)
        finally:
            body.close()

    def checksum_applies(self, file: RemoteFile, checksum: Checksum) -> bool:
        """An ETag is not the MD5 of objects encrypted with SSE-KMS or SSE-C: ask the object."""
        head = self._call(
            f"s3://{self.location.bucket}/{file.ref}",
            self.client.head_object,
            Bucket=self.location.bucket,
            Key=file.ref,
        )
        kms = str(head.get("ServerSideEncryption", "")).startswith("aws:kms")
        return not (kms or head.get("SSECustomerAlgorithm"))
