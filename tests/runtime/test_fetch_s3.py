"""`modelplane fetch s3://...` against moto's S3-compatible server with real boto3 on both sides."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from moto.core.authorization import enable_iam_authentication
from moto.server import ThreadedMotoServer

from tests.runtime.fetch_support import blob, fetch_env, last_line, run_fetch, visible_tree

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
REPOSITORY = {
    "resnet/config.pbtxt": b'name: "resnet"\nplatform: "pytorch_libtorch"\n',
    "resnet/1/model.pt": blob(200_000, seed=1),
    "bert/1/model.pt2": blob(150_000, seed=2),
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="models")
    for rel, data in REPOSITORY.items():
        client.put_object(Bucket="models", Key=f"repo/{rel}", Body=data)
    client.put_object(Bucket="models", Key="repo/", Body=b"")  # a console-made "folder" marker
    client.put_object(Bucket="models", Key="single/mlp.pt2", Body=b"exported program")
    client.put_object(Bucket="models", Key="public/mlp.pt2", Body=b"public program", ACL="public-read")
    # A multipart object: its ETag ("<md5 of md5s>-2") is not an MD5 of the content.
    client.upload_fileobj(
        _Reader(blob(6 * 1024 * 1024, seed=3)),
        "models",
        "multipart/weights.safetensors",
        Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024),
    )
    return client


class _Reader:
    """A file-like object over bytes (upload_fileobj wants .read)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos : end], min(end, len(self.data))
        return chunk


def env(endpoint: str, **extra: str) -> dict[str, str]:
    return fetch_env(AWS_ENDPOINT_URL=endpoint, **{**KEYS, **extra})


def test_single_object_is_fetched_and_md5_verified(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = run_fetch("s3://models/single/mlp.pt2", dest, env=env(s3_endpoint))
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"mlp/1/mlp.pt2": b"exported program"}
    assert "md5 verified" in result.stderr


def test_prefix_holding_a_repository_is_copied_as_is(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = run_fetch("s3://models/repo", dest, "--name", "ignored", env=env(s3_endpoint))
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == REPOSITORY
    assert "a model repository: bert, resnet" in result.stderr


def test_multipart_object_is_checked_by_size(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = run_fetch("s3://models/multipart/", dest, "--name", "llm", env=env(s3_endpoint))
    assert result.returncode == 0, result.stderr
    data = visible_tree(dest)["llm/1/weights.safetensors"]
    assert hashlib.sha256(data).digest() == hashlib.sha256(blob(6 * 1024 * 1024, seed=3)).digest()
    assert "weights.safetensors: done" in result.stderr
    assert "size verified" in result.stderr


def test_unchanged_prefix_is_skipped_and_a_changed_object_refetched(
    s3: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket="models", Key="skip/model.pt2", Body=b"v1")
    dest = tmp_path / "models"
    assert run_fetch("s3://models/skip/", dest, env=env(s3_endpoint)).returncode == 0
    again = run_fetch("s3://models/skip/", dest, env=env(s3_endpoint))
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    s3.put_object(Bucket="models", Key="skip/model.pt2", Body=b"v2")
    changed = run_fetch("s3://models/skip/", dest, env=env(s3_endpoint))
    assert changed.returncode == 0, changed.stderr
    assert visible_tree(dest) == {"skip/1/model.pt2": b"v2"}


def test_missing_key_is_not_found(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = run_fetch("s3://models/absent/model.pt2", dest, env=env(s3_endpoint))
    assert result.returncode == 1
    assert "fetch s3://models/absent/model.pt2 failed: s3://models/absent/model.pt2 not found" in last_line(
        result.stderr
    )
    assert visible_tree(dest) == {}


def test_missing_bucket_is_not_found(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    result = run_fetch("s3://no-such-bucket/model.pt2", tmp_path / "m", env=env(s3_endpoint))
    assert result.returncode == 1
    assert "NoSuchBucket" in last_line(result.stderr)


def test_bad_credentials_say_check_credentials_secret(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    with enable_iam_authentication():  # moto now checks keys against its IAM: these are unknown
        result = run_fetch(
            "s3://models/single/mlp.pt2",
            dest,
            env=env(s3_endpoint, AWS_ACCESS_KEY_ID="AKIAWRONG", AWS_SECRET_ACCESS_KEY="wrong"),
        )
    assert result.returncode == 1
    line = last_line(result.stderr)
    assert "access denied, check credentialsSecret" in line
    assert "InvalidAccessKeyId" in line
    assert visible_tree(dest) == {}


def test_anonymous_read_of_a_private_object_names_the_fix(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    anonymous = fetch_env(AWS_ENDPOINT_URL=s3_endpoint, AWS_REGION="us-east-1")
    result = run_fetch("s3://models/single/mlp.pt2", tmp_path / "m", env=anonymous)
    assert result.returncode == 1
    assert "bucket is not public; set AWS credentials in credentialsSecret" in last_line(result.stderr)


def test_anonymous_read_of_a_public_object_works(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    anonymous = fetch_env(AWS_ENDPOINT_URL=s3_endpoint, AWS_REGION="us-east-1")
    result = run_fetch("s3://models/public/mlp.pt2", tmp_path / "m", env=anonymous)
    assert result.returncode == 0, result.stderr
    assert visible_tree(tmp_path / "m") == {"mlp/1/mlp.pt2": b"public program"}


def test_kserve_style_s3_endpoint_variables_work(s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    kserve = fetch_env(S3_ENDPOINT=s3_endpoint.removeprefix("http://"), S3_USE_HTTPS="0", **KEYS)
    result = run_fetch("s3://models/single/mlp.pt2", tmp_path / "m", env=kserve)
    assert result.returncode == 0, result.stderr


def test_unreachable_endpoint_is_named(tmp_path: Path) -> None:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_fetch(
        "s3://models/x.pt2", tmp_path / "m", "--retries", "0", env=env(f"http://127.0.0.1:{port}")
    )
    assert result.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}" in last_line(result.stderr)
