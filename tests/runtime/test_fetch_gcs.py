"""`modelplane fetch gs://...` against a local fake of the Cloud Storage JSON API.

The fake (fetch_support.FakeGcs) implements the calls fetch makes as we read Google's API docs:
this tests our client against our reading of the API, not Google's service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.fetch_support import (
    FakeGcs,
    blob,
    fetch_env,
    last_line,
    run_fetch,
    service_account_key,
    visible_tree,
)

TOKEN = "ya29.test-token"


@pytest.fixture
def gcs() -> Iterator[FakeGcs]:
    with FakeGcs(token=TOKEN, page_size=2) as server:
        server.put("models", "mlp/model.pt2", blob(120_000, seed=1))
        server.put("models", "mlp/config.pbtxt", b"max_batch_size: 16")
        server.put("models", "mlp/.keep", b"")
        server.put("models", "repo/resnet/1/model.pt", blob(80_000, seed=2))
        server.put("models", "repo/resnet/config.pbtxt", b"c")
        server.put("models", "repo/bert/2/model.onnx", blob(40_000, seed=3))
        server.put("models", "single/classifier.onnx", b"onnx")
        server.put("models", "composite/model.pt2", b"composed", composite=True)
        yield server


def env(gcs: FakeGcs, **extra: str) -> dict[str, str]:
    return fetch_env(STORAGE_EMULATOR_HOST=gcs.url, **extra)


def test_folder_over_pages_is_fetched_and_md5_verified(gcs: FakeGcs, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = run_fetch("gs://models/mlp", dest, env=env(gcs, GOOGLE_OAUTH_ACCESS_TOKEN=TOKEN))
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {
        "mlp/config.pbtxt": b"max_batch_size: 16",
        "mlp/1/model.pt2": blob(120_000, seed=1),
    }
    assert result.stderr.count("md5 verified") == 2
    assert any(
        "pageToken" in s.query for s in gcs.seen("/storage/v1/b/models/o")
    )  # paged listing was followed
    downloads = [s for s in gcs.seen("/storage/v1/b/models/o/") if s.query.get("alt") == "media"]
    assert all(s.query.get("generation") for s in downloads)  # the listed generation is pinned


def test_repository_prefix_is_copied_as_is(gcs: FakeGcs, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = run_fetch("gs://models/repo/", dest, env=env(gcs, GOOGLE_OAUTH_ACCESS_TOKEN=TOKEN))
    assert result.returncode == 0, result.stderr
    assert set(visible_tree(dest)) == {"resnet/1/model.pt", "resnet/config.pbtxt", "bert/2/model.onnx"}


def test_single_object_and_composite_object_without_md5(gcs: FakeGcs, tmp_path: Path) -> None:
    result = run_fetch(
        "gs://models/single/classifier.onnx", tmp_path / "a", env=env(gcs, GOOGLE_OAUTH_ACCESS_TOKEN=TOKEN)
    )
    assert result.returncode == 0, result.stderr
    assert visible_tree(tmp_path / "a") == {"classifier/1/classifier.onnx": b"onnx"}
    composite = run_fetch(
        "gs://models/composite/model.pt2", tmp_path / "b", env=env(gcs, GOOGLE_OAUTH_ACCESS_TOKEN=TOKEN)
    )
    assert composite.returncode == 0, composite.stderr
    assert "size verified" in composite.stderr


def test_service_account_key_from_env_is_exchanged_for_a_token(gcs: FakeGcs, tmp_path: Path) -> None:
    key = service_account_key(gcs)
    result = run_fetch(
        "gs://models/single/classifier.onnx",
        tmp_path / "m",
        env=env(gcs, GOOGLE_APPLICATION_CREDENTIALS_JSON=key),
    )
    assert result.returncode == 0, result.stderr
    assert len(gcs.seen("/token", method="POST")) == 1


def test_service_account_key_file_path_works_too(gcs: FakeGcs, tmp_path: Path) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(service_account_key(gcs))
    result = run_fetch(
        "gs://models/single/classifier.onnx",
        tmp_path / "m",
        env=env(gcs, GOOGLE_APPLICATION_CREDENTIALS=str(key_file)),
    )
    assert result.returncode == 0, result.stderr


def test_key_signed_by_another_private_key_is_rejected(gcs: FakeGcs, tmp_path: Path) -> None:
    forged = service_account_key(gcs)
    service_account_key(gcs)  # the server now trusts a different key
    result = run_fetch(
        "gs://models/single/classifier.onnx",
        tmp_path / "m",
        env=env(gcs, GOOGLE_APPLICATION_CREDENTIALS_JSON=forged),
    )
    assert result.returncode == 1
    line = last_line(result.stderr)
    assert "the service-account key was rejected by" in line
    assert "invalid_grant: Invalid JWT Signature" in line


def test_metadata_server_token_is_used_when_no_credentials_are_set(gcs: FakeGcs, tmp_path: Path) -> None:
    host = gcs.url.removeprefix("http://")
    result = run_fetch(
        "gs://models/single/classifier.onnx", tmp_path / "m", env=env(gcs, GCE_METADATA_HOST=host)
    )
    assert result.returncode == 0, result.stderr
    assert gcs.seen("/computeMetadata/v1/instance/service-accounts/default/token")


def test_without_credentials_a_private_bucket_is_denied(gcs: FakeGcs, tmp_path: Path) -> None:
    result = run_fetch("gs://models/single/classifier.onnx", tmp_path / "m", env=env(gcs))
    assert result.returncode == 1
    assert "the bucket is not public; set Google credentials in credentialsSecret (HTTP 401)" in last_line(
        result.stderr
    )


def test_wrong_token_is_access_denied(gcs: FakeGcs, tmp_path: Path) -> None:
    result = run_fetch(
        "gs://models/single/classifier.onnx",
        tmp_path / "m",
        env=env(gcs, GOOGLE_OAUTH_ACCESS_TOKEN="expired"),
    )
    assert result.returncode == 1
    assert "access denied, check the Google credentials in credentialsSecret (HTTP 401)" in last_line(
        result.stderr
    )


def test_md5_mismatch_fails_and_keeps_nothing(gcs: FakeGcs, tmp_path: Path) -> None:
    gcs.put("models", "bad/model.pt2", b"weights", bad_md5=True)
    dest = tmp_path / "models"
    result = run_fetch("gs://models/bad/model.pt2", dest, env=env(gcs, GOOGLE_OAUTH_ACCESS_TOKEN=TOKEN))
    assert result.returncode == 1
    assert "model.pt2: checksum mismatch: md5 expected" in last_line(result.stderr)
    assert visible_tree(dest) == {}


def test_missing_object_and_bucket_are_not_found(gcs: FakeGcs, tmp_path: Path) -> None:
    token = env(gcs, GOOGLE_OAUTH_ACCESS_TOKEN=TOKEN)
    missing = run_fetch("gs://models/absent/model.pt2", tmp_path / "a", env=token)
    assert missing.returncode == 1
    assert "gs://models/absent/model.pt2 not found" in last_line(missing.stderr)
    bucket = run_fetch("gs://no-bucket/model.pt2", tmp_path / "b", env=token)
    assert bucket.returncode == 1
    assert "not found (HTTP 404): The specified bucket does not exist." in last_line(bucket.stderr)
