"""`modelplane fetch` over file:// and http(s)://, run as the init container runs it: a process.

Covers the layout rules, skip-when-same, resume after a dropped connection and after a killed
process, atomicity, checksum mismatch, error statuses, DNS and timeouts, archives, and bad input.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import socket
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.fetch_support import (
    FileServer,
    blob,
    fetch_env,
    hidden_entries,
    last_line,
    run_fetch,
    start_fetch,
    visible_tree,
    wait_for,
)


@pytest.fixture
def http() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "models"


def body_requests(server: FileServer, path: str) -> list[str]:
    """The Range headers of GETs for `path` that fetched content (not the one-byte probe)."""
    return [s.headers.get("range", "") for s in server.seen(path) if s.headers.get("range") != "bytes=0-0"]


# ------------------------------------------------------------------------------------ layouts


def test_single_file_over_http_lands_at_name_version_file(http: FileServer, dest: Path) -> None:
    data = blob(300_000)
    uri = http.put("/models/resnet50.pt2", data)
    result = run_fetch(uri, dest)
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"resnet50/1/resnet50.pt2": data}
    assert hidden_entries(dest) == [".modelplane-fetch.json", ".modelplane-fetch.lock"]
    manifest = json.loads((dest / ".modelplane-fetch.json").read_text())
    assert manifest["uri"] == uri
    assert manifest["files"] == {"resnet50/1/resnet50.pt2": len(data)}
    assert "resnet50.pt2: done" in result.stderr


def test_name_and_version_flags_place_the_file(http: FileServer, dest: Path) -> None:
    uri = http.put("/download/weights.onnx", b"onnx-bytes")
    result = run_fetch(uri, dest, "--name", "classifier", "--version", "7")
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"classifier/7/weights.onnx": b"onnx-bytes"}


def test_content_disposition_names_a_file_behind_a_query_url(http: FileServer, dest: Path) -> None:
    http.put("/get", b"abc", disposition="bert.pt")
    result = run_fetch(f"{http.url}/get?id=42&X-Amz-Signature=secret", dest)
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"bert/1/bert.pt": b"abc"}
    assert "secret" not in result.stderr  # pre-signed query strings stay out of the log


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_file_uri_repository_is_copied_as_is(tmp_path: Path, dest: Path) -> None:
    repo = {
        "resnet/config.pbtxt": b'name: "resnet"',
        "resnet/1/model.pt": b"ts-1",
        "resnet/2/model.pt": b"ts-2",
        "bert/1/model.pt2": b"ep",
    }
    write_files(tmp_path / "repo", {**repo, ".git/HEAD": b"ref", "resnet/.DS_Store": b"x"})
    result = run_fetch(f"file://{tmp_path}/repo", dest, "--name", "ignored")
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == repo  # hidden files are not copied, names are not changed
    assert "a model repository: bert, resnet" in result.stderr


def test_folder_with_one_models_files_gets_config_beside_version(tmp_path: Path, dest: Path) -> None:
    write_files(
        tmp_path / "mlp",
        {
            "model.pt2": b"ep",
            "config.pbtxt": b"max_batch_size: 8",
            "model.yaml": b"inputs: []",
            "extra/vocab.txt": b"v",
        },
    )
    result = run_fetch(f"file://{tmp_path}/mlp/", dest, "--version", "3")
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {
        "mlp/config.pbtxt": b"max_batch_size: 8",
        "mlp/model.yaml": b"inputs: []",
        "mlp/3/model.pt2": b"ep",
        "mlp/3/extra/vocab.txt": b"v",
    }


def test_model_directory_with_versions_is_copied_under_its_name(tmp_path: Path, dest: Path) -> None:
    write_files(tmp_path / "cnn", {"config.pbtxt": b"c", "1/model.pt": b"one", "4/model.pt": b"four"})
    result = run_fetch(f"file://{tmp_path}/cnn", dest, "--name", "vision", "--version", "9")
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {
        "vision/config.pbtxt": b"c",
        "vision/1/model.pt": b"one",
        "vision/4/model.pt": b"four",
    }


# ------------------------------------------------------------------------- skip when the same


def test_second_fetch_of_unchanged_source_downloads_nothing(http: FileServer, dest: Path) -> None:
    uri = http.put("/m/model.pt2", blob(50_000))
    assert run_fetch(uri, dest).returncode == 0
    downloads = len(body_requests(http, "/m/model.pt2"))
    again = run_fetch(uri, dest)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert len(body_requests(http, "/m/model.pt2")) == downloads  # only the metadata probe was sent

    http.files["/m/model.pt2"] = blob(50_000, seed=1)  # new content, new ETag
    changed = run_fetch(uri, dest)
    assert changed.returncode == 0, changed.stderr
    assert visible_tree(dest) == {"model/1/model.pt2": blob(50_000, seed=1)}
    assert [p.name for p in dest.iterdir() if p.name.startswith((".partial", ".trash"))] == []


def test_a_file_damaged_in_dest_is_fetched_again(http: FileServer, dest: Path) -> None:
    uri = http.put("/m/model.pt2", blob(10_000))
    assert run_fetch(uri, dest).returncode == 0
    (dest / "model/1/model.pt2").write_bytes(b"truncated")
    result = run_fetch(uri, dest)
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"model/1/model.pt2": blob(10_000)}


def test_without_etag_or_last_modified_the_file_is_fetched_every_time(http: FileServer, dest: Path) -> None:
    uri = http.put("/plain/model.onnx", b"x" * 1000, etag=False)
    assert run_fetch(uri, dest).returncode == 0
    assert run_fetch(uri, dest).returncode == 0
    assert len(body_requests(http, "/plain/model.onnx")) == 2


def test_force_fetches_even_when_unchanged(http: FileServer, dest: Path) -> None:
    uri = http.put("/m/model.pt2", b"abc")
    assert run_fetch(uri, dest).returncode == 0
    assert run_fetch(uri, dest, "--force").returncode == 0
    assert len(body_requests(http, "/m/model.pt2")) == 2


# ---------------------------------------------------------------------- resume and restart


def test_dropped_connection_is_resumed_with_a_range_request(http: FileServer, dest: Path) -> None:
    data = blob(3_000_000)
    uri = http.put("/big/model.pt2", data, drops=2, drop_after=1_000_000)
    result = run_fetch(uri, dest)
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"model/1/model.pt2": data}
    ranges = body_requests(http, "/big/model.pt2")
    assert ranges[0] == ""
    assert ranges[1].startswith("bytes=")
    assert ranges[1] != "bytes=0-"
    assert "retrying" in result.stderr


def test_server_ignoring_range_restarts_the_file_and_still_verifies(http: FileServer, dest: Path) -> None:
    data = blob(2_000_000)
    digest = hashlib.sha256(data).hexdigest()
    uri = http.put("/big/model.pt2", data, drops=1, drop_after=700_000, ranged=False)
    result = run_fetch(f"{uri}#sha256={digest}", dest)
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"model/1/model.pt2": data}
    assert "sha256 verified" in result.stderr


def test_transient_503_is_retried(http: FileServer, dest: Path) -> None:
    uri = http.put("/busy/model.pt2", b"weights", fail_first=2)
    result = run_fetch(uri, dest)
    assert result.returncode == 0, result.stderr
    assert "HTTP 503" in result.stderr
    assert visible_tree(dest) == {"model/1/model.pt2": b"weights"}


def test_killed_fetch_leaves_no_model_and_the_restart_resumes(http: FileServer, dest: Path) -> None:
    data = blob(4_000_000)
    uri = http.put("/slow/model.pt2", data, rate=400_000)
    process = start_fetch(uri, dest)
    partials: list[Path] = []

    def partial_grew() -> bool:
        partials[:] = list(dest.glob(".partial-*/incoming/model.pt2"))
        return bool(partials) and partials[0].stat().st_size > 600_000

    try:
        wait_for(partial_grew, what="a partial download")
        assert visible_tree(dest) == {}  # nothing visible while the file is in flight
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    incoming = partials[0]
    had = incoming.stat().st_size
    assert 600_000 < had < len(data)
    assert visible_tree(dest) == {}

    http.options["/slow/model.pt2"].rate = None
    result = run_fetch(uri, dest)
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"model/1/model.pt2": data}
    assert "resuming at" in result.stderr
    resumed = body_requests(http, "/slow/model.pt2")[-1]
    assert resumed.startswith("bytes=")
    assert int(resumed[6:-1]) >= had - 1
    assert [p for p in dest.iterdir() if p.name.startswith(".partial")] == []


def test_unreachable_source_keeps_the_complete_earlier_fetch(dest: Path) -> None:
    with FileServer() as server:
        uri = server.put("/m/model.pt2", b"weights")
        assert run_fetch(uri, dest).returncode == 0
    result = run_fetch(uri, dest, "--retries", "0")  # the server is gone: connection refused
    assert result.returncode == 0, result.stderr
    assert "cannot check" in result.stderr
    assert "keeping the copy fetched" in result.stderr
    assert visible_tree(dest) == {"model/1/model.pt2": b"weights"}
    other = run_fetch(uri, dest, "--retries", "0", "--version", "2")  # not what DEST holds: fails
    assert other.returncode == 1
    assert "connection refused" in last_line(other.stderr)


def test_partial_left_by_another_uri_is_cleaned(http: FileServer, dest: Path) -> None:
    stale = dest / ".partial-0123456789abcdef" / "incoming"
    stale.mkdir(parents=True)
    (stale / "old.bin").write_bytes(b"x" * 100)
    (dest / ".trash-0123456789abcdef").mkdir()
    uri = http.put("/m/model.pt2", b"abc")
    result = run_fetch(uri, dest)
    assert result.returncode == 0, result.stderr
    assert hidden_entries(dest) == [".modelplane-fetch.json", ".modelplane-fetch.lock"]


# ----------------------------------------------------------------------------------- failures


def assert_failed(result: object, dest: Path, *needles: str, code: int = 1) -> str:
    """Exit code, a last log line naming the cause, and nothing half-made in DEST."""
    assert result.returncode == code, result.stderr  # type: ignore[attr-defined]
    line = last_line(result.stderr)  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in line, line
    assert visible_tree(dest) == {}
    return line


def test_checksum_mismatch_fails_and_keeps_nothing(http: FileServer, dest: Path, tmp_path: Path) -> None:
    uri = http.put("/m/model.pt2", b"the real bytes")
    termination = tmp_path / "termination-log"
    termination.write_text("")
    result = run_fetch(f"{uri}#sha256={'0' * 64}", dest, "--termination-log", str(termination))
    line = assert_failed(result, dest, uri, "checksum mismatch", "sha256 expected 000")
    assert termination.read_text().strip() == line.split("fetch: ", 1)[1]
    assert list(dest.glob(".partial-*/incoming/*")) == []  # the bad bytes are not resumed later


def test_missing_file_is_a_404_naming_the_uri(http: FileServer, dest: Path) -> None:
    assert_failed(
        run_fetch(f"{http.url}/nope/model.pt2", dest),
        dest,
        f"{http.url}/nope/model.pt2",
        "not found (HTTP 404)",
    )


def test_forbidden_says_check_credentials(http: FileServer, dest: Path) -> None:
    uri = http.put("/private/model.pt2", b"x", status=403)
    assert_failed(run_fetch(uri, dest), dest, "access denied, check credentialsSecret (HTTP 403)")


def test_unknown_host_is_a_dns_error(dest: Path) -> None:
    result = run_fetch("https://models.example.invalid/model.pt2", dest, "--retries", "1")
    assert_failed(result, dest, "DNS lookup failed for models.example.invalid")


def test_connection_refused_is_named(dest: Path) -> None:

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_fetch(f"http://127.0.0.1:{port}/model.pt2", dest, "--retries", "0")
    assert_failed(result, dest, "connection refused by 127.0.0.1")


def test_server_that_never_answers_times_out(http: FileServer, dest: Path) -> None:
    uri = http.put("/stuck/model.pt2", b"x", stall=60)
    result = run_fetch(uri, dest, "--retries", "1", "--timeout", "0.5")
    assert_failed(result, dest, "timed out talking to 127.0.0.1")


def test_failed_fetch_leaves_the_previous_model_in_place(http: FileServer, dest: Path) -> None:
    uri = http.put("/m/model.pt2", b"v1")
    assert run_fetch(uri, dest).returncode == 0
    http.files["/m/model.pt2"] = b"v2 but corrupted"
    result = run_fetch(f"{uri}#sha256={'1' * 64}", dest)
    assert result.returncode == 1
    assert visible_tree(dest) == {"model/1/model.pt2": b"v1"}


@pytest.mark.parametrize(
    ("uri", "extra", "needle"),
    [
        ("ftp://host/model.pt2", [], "unsupported scheme ftp://"),
        ("pvc://claim/models", [], "pvc:// is not fetched; the operator mounts the claim"),
        ("/abs/model.pt2", [], "no scheme; use one of file://"),
        ("s3://Bad_Bucket/x", [], "'Bad_Bucket' is not a valid bucket name"),
        ("hf://only-one-part", [], "expected hf://<namespace>/<repo>"),
        ("https://h/model.pt2#md5=abc", [], "#sha256=<64 hex digits>"),
        ("file:///x/../etc/passwd", [], "'..' is not allowed"),
        ("file:///tmp/model.pt2", ["--name", "../evil"], "invalid --name '../evil'"),
        ("file:///tmp/model.pt2", ["--version", "v1"], "invalid --version 'v1'"),
    ],
)
def test_bad_input_exits_2_and_touches_nothing(
    tmp_path: Path, uri: str, extra: list[str], needle: str
) -> None:
    dest = tmp_path / "models"
    write_files(dest, {"keep/1/model.pt": b"already here"})
    result = run_fetch(uri, dest, *extra)
    assert result.returncode == 2, result.stderr
    assert needle in last_line(result.stderr)
    assert visible_tree(dest) == {"keep/1/model.pt": b"already here"}


def test_unwritable_dest_is_named(http: FileServer, tmp_path: Path) -> None:
    uri = http.put("/m/model.pt2", b"x")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_fetch(uri, blocker / "models")
    assert result.returncode == 1
    assert f"cannot create {blocker}/models" in last_line(result.stderr)


# ----------------------------------------------------------------------------------- archives


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_tar_gz_holding_a_repository_is_unpacked_as_is(http: FileServer, dest: Path) -> None:
    files = {"resnet/config.pbtxt": b"c", "resnet/1/model.pt": b"w"}
    uri = http.put("/bundles/repo.tar.gz", tar_gz(files))
    result = run_fetch(uri, dest)
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == files


def test_zip_of_one_models_files_wrapped_in_a_folder(http: FileServer, dest: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("export/model.pt2", b"ep")
        zf.writestr("export/config.pbtxt", b"c")
    uri = http.put("/bundles/mlp.zip", buffer.getvalue())
    result = run_fetch(uri, dest, "--version", "2")
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"mlp/config.pbtxt": b"c", "mlp/2/model.pt2": b"ep"}


def test_archive_escaping_dest_is_refused(http: FileServer, dest: Path) -> None:
    uri = http.put("/bundles/evil.tar.gz", tar_gz({"../../outside.txt": b"x"}))
    result = run_fetch(uri, dest)
    assert_failed(result, dest, "evil.tar.gz: refusing archive member")
    assert not (dest.parent / "outside.txt").exists()


def test_http_authorization_from_env_is_sent(http: FileServer, dest: Path) -> None:
    uri = http.put("/auth/model.pt2", b"x")
    result = run_fetch(uri, dest, env=fetch_env(MODELPLANE_HTTP_AUTHORIZATION="Bearer s3cr3t"))
    assert result.returncode == 0, result.stderr
    assert {s.headers.get("authorization") for s in http.seen("/auth/")} == {"Bearer s3cr3t"}
    assert "s3cr3t" not in result.stderr
