"""The pure parts of fetch: URI parsing, where files land, names, checksums, backoff."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from modelplane_runtime.fetch.errors import FetchError, UsageError
from modelplane_runtime.fetch.layout import (
    check_relpath,
    classify,
    name_from,
    plan,
    unwrap_single_folder,
    validate_name,
    validate_version,
)
from modelplane_runtime.fetch.listing import Checksum, Listing, RemoteFile
from modelplane_runtime.fetch.progress import Progress, human
from modelplane_runtime.fetch.staging import Manifest, unchanged
from modelplane_runtime.fetch.transfer import Digest, Policy
from modelplane_runtime.fetch.uris import BucketURI, FileURI, HfURI, HttpURI, display, parse_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///models/a.pt2", FileURI("/models/a.pt2")),
        ("file://localhost/models/dir/", FileURI("/models/dir")),
        ("https://h/x.pt2", HttpURI("https://h/x.pt2", None)),
        ("https://h/x.pt2#sha256=" + "AB" * 32, HttpURI("https://h/x.pt2", "ab" * 32)),
        ("s3://bucket", BucketURI("s3", "bucket", "")),
        ("s3://bucket/a/b/", BucketURI("s3", "bucket", "a/b/")),
        ("gs://my_bucket.x/m.onnx", BucketURI("gs", "my_bucket.x", "m.onnx")),
        ("hf://org/repo", HfURI("model", "org/repo", "main", "")),
        ("hf://org/repo@v1.0/sub/f.bin", HfURI("model", "org/repo", "v1.0", "sub/f.bin")),
        ("hf://org/repo@refs%2Fpr%2F3", HfURI("model", "org/repo", "refs/pr/3", "")),
        ("hf://datasets/org/data/x", HfURI("dataset", "org/data", "main", "x")),
    ],
)
def test_parse_uri(uri: str, expected: object) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "",
        " s3://b/k",
        "model.pt2",
        "oci://x/y",
        "pvc://c/p",
        "file://host/x",
        "s3://b/a/../k",
        "hf://o/r/../x",
    ],
)
def test_bad_uris_are_usage_errors(uri: str) -> None:
    with pytest.raises(UsageError):
        parse_uri(uri)


def test_display_hides_credentials_and_signed_queries() -> None:
    assert display("https://user:pw@host:8443/m.pt2?X-Amz-Signature=abc") == "https://host:8443/m.pt2?…"
    assert display("s3://b/k") == "s3://b/k"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("resnet50.pt2", "resnet50"),
        ("bundle.tar.gz", "bundle"),
        ("models/llama 3/", "llama-3"),
        (".hidden", "hidden"),
        ("x.y.onnx", "x.y"),
        ("???", "model"),
    ],
)
def test_name_from(text: str, name: str) -> None:
    assert name_from(text) == name
    assert validate_name(name) == name


def test_validate_name_and_version() -> None:
    with pytest.raises(UsageError, match="--name"):
        validate_name(".x")
    with pytest.raises(UsageError, match="--version '01'"):
        validate_version("01")
    assert validate_version("0") == "0"


@pytest.mark.parametrize(
    ("paths", "kind"),
    [
        (["model.pt2"], "model-files"),
        (["model.pt2", "config.pbtxt"], "model-files"),
        (["config.pbtxt", "1/model.pt"], "model-dir"),
        (["resnet/config.pbtxt", "resnet/1/model.pt"], "repository"),
        (["resnet/1/model.pt", "README.md"], "repository"),
        (["ensemble/config.pbtxt", "a/1/model.pt"], "repository"),
        (["export/config.pbtxt", "export/model.pt2"], "model-files"),  # a wrapped folder, not a model dir
        (["tokenizer/vocab.txt", "model.safetensors"], "model-files"),
    ],
)
def test_classify(paths: list[str], kind: str) -> None:
    assert classify(paths) == kind


def test_plan_places_model_level_files_beside_the_version_folder() -> None:
    layout = plan(["config.pbtxt", "model.pt2", "sub/x.bin"], single_file=False, name="m", version="4")
    assert {p.source: p.target for p in layout.placements} == {
        "config.pbtxt": "m/config.pbtxt",
        "model.pt2": "m/4/model.pt2",
        "sub/x.bin": "m/4/sub/x.bin",
    }
    assert layout.entries == ("m",)


def test_plan_single_file_and_repository() -> None:
    single = plan(["weights.onnx"], single_file=True, name="clf", version="2")
    assert [p.target for p in single.placements] == ["clf/2/weights.onnx"]
    repo = plan(["b/1/m.pt", "a/config.pbtxt", "a/1/m.pt"], single_file=False, name="x", version="1")
    assert repo.kind == "repository"
    assert repo.entries == ("a", "b")


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a//b", "a/./b", "a\\b", ""])
def test_check_relpath_refuses_escapes(path: str) -> None:
    with pytest.raises(FetchError):
        check_relpath(path)


def test_unwrap_single_folder() -> None:
    assert unwrap_single_folder(["pkg/model.pt2", "pkg/config.pbtxt"]) == (
        "pkg/",
        ["model.pt2", "config.pbtxt"],
    )
    assert unwrap_single_folder(["m/1/model.pt"]) == ("", ["m/1/model.pt"])  # a repository with one model
    assert unwrap_single_folder(["a/x", "b/y"]) == ("", ["a/x", "b/y"])


def test_digest_checks_git_blob_ids_and_resumes_from_disk(tmp_path: Path) -> None:
    data = b"hello world\n" * 1000
    blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    digest = Digest(
        (Checksum("git-blob-sha1", blob_id), Checksum("md5", hashlib.md5(data).hexdigest())), len(data)
    )
    path = tmp_path / "f"
    path.write_bytes(data[:5000])
    digest.catch_up(path, 5000)  # a resumed download hashes what is already on disk
    digest.update(data[5000:])
    assert digest.mismatches() == []
    wrong = Digest((Checksum("sha256", "0" * 64),), len(data))
    wrong.update(data)
    assert [c.algo for c, _ in wrong.mismatches()] == ["sha256"]


def test_unknown_identity_never_counts_as_unchanged() -> None:
    listing = Listing("file", (RemoteFile("m.pt2", 3, None),), "m")
    manifest = Manifest(
        "u", "m", "1", "file", ("m",), {"m.pt2": {"size": 3, "identity": None}}, {"m/1/m.pt2": 3}
    )
    assert not unchanged(manifest, listing)


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    policy = Policy(retry_wait=1.0)
    assert 0.5 <= policy.delay(1, None) <= 1.0
    assert 4.0 <= policy.delay(4, None) <= 8.0
    assert policy.delay(20, None) <= 30.0
    assert policy.delay(1, 12.0) == 12.0


def test_progress_lines_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = Progress(2048, interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="modelplane.fetch"):
        progress.start_file("a.bin", 2048, 0)
        for _ in range(4):
            now[0] += 1
            progress.advance("a.bin", 256)
        now[0] += 10
        progress.advance("a.bin", 1024)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert lines == ["progress: 2.0 KiB of 2.0 KiB (100%), 146 B/s; a.bin 2.0 KiB/2.0 KiB"]
    assert human(1536 * 1024**3) == "1.5 TiB"
