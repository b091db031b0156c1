"""`modelplane fetch hf://...` against a local fake of the Hugging Face Hub HTTP API.

The fake (fetch_support.FakeHub) implements the two calls fetch makes (the revision's file list
with blobs, and resolve with a CDN redirect for LFS files) as we read the Hub's API: this tests
our client against our reading of the API, not the Hub itself.
"""

from __future__ import annotations

import hashlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.fetch_support import (
    FakeHub,
    blob,
    fetch_env,
    last_line,
    run_fetch,
    start_fetch,
    visible_tree,
    wait_for,
)

TOKEN = "hf_test_token"
FILES = {
    "config.json": b'{"hidden_size": 8}',
    "model.safetensors": blob(400_000, seed=1),
    "tokenizer/vocab.txt": b"a\nb\n",
    ".gitattributes": b"*.safetensors filter=lfs",
}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(token=TOKEN) as server:
        server.add("acme/tiny-bert", FILES, lfs={"model.safetensors"})
        server.add("acme/gated", {"model.pt2": b"gated weights"}, gated=True)
        yield server


def env(hub: FakeHub, **extra: str) -> dict[str, str]:
    return fetch_env(HF_ENDPOINT=hub.url, **extra)


def test_whole_repository_lands_as_one_models_files(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = run_fetch("hf://acme/tiny-bert", dest, env=env(hub, HF_TOKEN=TOKEN))
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {
        "tiny-bert/1/config.json": FILES["config.json"],
        "tiny-bert/1/model.safetensors": FILES["model.safetensors"],
        "tiny-bert/1/tokenizer/vocab.txt": FILES["tokenizer/vocab.txt"],
    }
    assert "sha256 verified" in result.stderr  # the LFS file
    assert "git-blob-sha1 verified" in result.stderr  # the small files
    commit = hub.repos["acme/tiny-bert"].refs["main"]
    assert f"revision main is commit {commit}" in result.stderr
    assert all(f"/resolve/{commit}/" in s.path for s in hub.seen("/acme/tiny-bert/resolve/"))
    # The token went to the Hub; the CDN (which rejects Authorization) got none.
    assert hub.cdn.seen("/blobs/")
    assert all("authorization" not in s.headers for s in hub.cdn.seen("/blobs/"))


def test_single_file_path_and_revision(hub: FakeHub, tmp_path: Path) -> None:
    commit = hub.repos["acme/tiny-bert"].refs["main"]
    hub.repos["acme/tiny-bert"].refs["v1.0"] = commit
    dest = tmp_path / "models"
    result = run_fetch("hf://acme/tiny-bert@v1.0/model.safetensors", dest, "--name", "bert", env=env(hub))
    assert result.returncode == 0, result.stderr
    assert visible_tree(dest) == {"bert/1/model.safetensors": FILES["model.safetensors"]}


def test_unchanged_repository_is_skipped(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    assert run_fetch("hf://acme/tiny-bert", dest, env=env(hub)).returncode == 0
    downloads = len(hub.seen("/acme/tiny-bert/resolve/"))
    again = run_fetch("hf://acme/tiny-bert", dest, env=env(hub))
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert len(hub.seen("/acme/tiny-bert/resolve/")) == downloads


def test_gated_repository_without_token_names_hf_token(hub: FakeHub, tmp_path: Path) -> None:
    result = run_fetch("hf://acme/gated", tmp_path / "m", env=env(hub))
    assert result.returncode == 1
    line = last_line(result.stderr)
    assert "repository not found, or private/gated: set HF_TOKEN in credentialsSecret (HTTP 401)" in line
    with_token = run_fetch("hf://acme/gated", tmp_path / "m", env=env(hub, HF_TOKEN=TOKEN))
    assert with_token.returncode == 0, with_token.stderr


def test_unknown_revision_and_path_are_not_found(hub: FakeHub, tmp_path: Path) -> None:
    revision = run_fetch("hf://acme/tiny-bert@nope", tmp_path / "a", env=env(hub))
    assert revision.returncode == 1
    assert "hf://acme/tiny-bert@nope not found (HTTP 404): Invalid rev id: nope" in last_line(revision.stderr)
    path = run_fetch("hf://acme/tiny-bert/absent.bin", tmp_path / "b", env=env(hub))
    assert path.returncode == 1
    assert "absent.bin not found" in last_line(path.stderr)


def test_corrupted_download_is_a_checksum_mismatch(hub: FakeHub, tmp_path: Path) -> None:
    hub.repos["acme/tiny-bert"].corrupt.add("model.safetensors")
    dest = tmp_path / "models"
    result = run_fetch("hf://acme/tiny-bert", dest, env=env(hub))
    assert result.returncode == 1
    assert "model.safetensors: checksum mismatch: sha256 expected" in last_line(result.stderr)
    assert visible_tree(dest) == {}


def test_dest_never_holds_half_a_model(hub: FakeHub, tmp_path: Path) -> None:
    """Watch DEST during a slow multi-file fetch: the model folder appears whole or not at all."""
    hub.add(
        "acme/two-shards",
        {"a.safetensors": blob(300_000, seed=5), "b.safetensors": blob(300_000, seed=6)},
        lfs={"a.safetensors", "b.safetensors"},
    )
    hub.rate = 600_000
    dest = tmp_path / "models"
    process = start_fetch("hf://acme/two-shards", dest, "--jobs", "1", env=env(hub))
    observed: list[dict[str, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            snapshot = {}
            for path in dest.glob("two-shards/**/*"):
                if path.is_file():
                    try:
                        snapshot[path.relative_to(dest).as_posix()] = path.stat().st_size
                    except FileNotFoundError:
                        continue
            observed.append(snapshot)
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    finally:
        done.set()
        watcher.join()
        if process.stderr:
            process.stderr.close()
        if process.stdout:
            process.stdout.close()
    whole = {"two-shards/1/a.safetensors": 300_000, "two-shards/1/b.safetensors": 300_000}
    assert {} in observed  # the watcher looked while the shards were in flight...
    assert all(snapshot in ({}, whole) for snapshot in observed), [
        s for s in observed if s not in ({}, whole)
    ][:3]
    assert {k: len(v) for k, v in visible_tree(dest).items()} == whole  # ...and the whole model arrived


def test_restart_keeps_files_verified_before_the_kill(hub: FakeHub, tmp_path: Path) -> None:

    shards = {"a.safetensors": blob(200_000, seed=7), "b.safetensors": blob(900_000, seed=8)}
    hub.add("acme/shards", shards, lfs=set(shards))
    hub.rate = 300_000
    dest = tmp_path / "models"
    process = start_fetch("hf://acme/shards", dest, "--jobs", "1", env=env(hub))
    try:
        # Largest first: b is fetched, verified and staged before a starts; kill during a.
        wait_for(
            lambda: any(dest.glob(".partial-*/tree/shards/1/b.safetensors")), what="the first shard staged"
        )
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
    assert visible_tree(dest) == {}
    hub.rate = None
    result = run_fetch("hf://acme/shards", dest, env=env(hub))
    assert result.returncode == 0, result.stderr
    assert "b.safetensors: already fetched and verified" in result.stderr
    assert visible_tree(dest) == {f"shards/1/{k}": v for k, v in shards.items()}
    b_blob = hashlib.sha256(shards["b.safetensors"]).hexdigest()
    assert len(hub.cdn.seen(f"/blobs/{b_blob}")) == 1  # not downloaded again
