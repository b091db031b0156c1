"""One fetch from start to end: list, decide (skip, resume, or fetch), download, place, swap."""

from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from modelplane_runtime.fetch.archive import extract
from modelplane_runtime.fetch.errors import FetchError
from modelplane_runtime.fetch.layout import (
    Layout,
    is_archive,
    plan,
    unwrap_single_folder,
    validate_name,
    validate_version,
)
from modelplane_runtime.fetch.listing import Listing, RemoteFile, Source
from modelplane_runtime.fetch.progress import Progress, human
from modelplane_runtime.fetch.staging import (
    Manifest,
    Staging,
    disk_error,
    locked,
    now_iso,
    prepare_dest,
    source_record,
    staging_key,
    unchanged,
)
from modelplane_runtime.fetch.transfer import (
    Cancelled,
    Policy,
    State,
    fetch_file,
    is_complete,
    resumable_bytes,
    retrying,
)
from modelplane_runtime.fetch.uris import BucketURI, FileURI, HfURI, HttpURI, Location, display, parse_uri

log = logging.getLogger("modelplane.fetch")


@dataclass(frozen=True)
class Request:
    uri: str
    dest: Path
    name: str | None = None
    version: str = "1"
    force: bool = False
    policy: Policy = field(default_factory=Policy)
    http_authorization: str | None = None


@dataclass(frozen=True)
class Result:
    skipped: bool
    kind: str
    entries: tuple[str, ...]
    files: int
    bytes: int


def make_source(location: Location, request: Request) -> Source:
    timeout = request.policy.timeout
    if isinstance(location, FileURI):
        from modelplane_runtime.fetch.local import LocalSource

        return LocalSource(location)
    if isinstance(location, HttpURI):
        from modelplane_runtime.fetch.http_client import HttpSource

        return HttpSource(location, timeout=timeout, authorization=request.http_authorization)
    if isinstance(location, HfURI):
        from modelplane_runtime.fetch.hf import HfSource

        return HfSource(location, timeout=timeout)
    if isinstance(location, BucketURI) and location.scheme == "s3":
        from modelplane_runtime.fetch.s3 import S3Source

        return S3Source(location, timeout=timeout)
    from modelplane_runtime.fetch.gcs import GcsSource

    return GcsSource(location, timeout=timeout)


def run(request: Request) -> Result:
    """Fetch `request.uri` into `request.dest`; raise FetchError with the cause if it cannot."""
    location = parse_uri(request.uri)
    version = validate_version(request.version)
    name = validate_name(request.name) if request.name is not None else None
    dest = request.dest
    prepare_dest(dest)
    try:
        with locked(dest):
            return _run_locked(request, location, name, version)
    except OSError as exc:
        raise disk_error(exc, dest) from None


def _run_locked(request: Request, location: Location, name: str | None, version: str) -> Result:
    dest, policy, shown = request.dest, request.policy, display(request.uri)
    stop = threading.Event()
    previous = Manifest.read(dest)
    source = make_source(location, request)
    try:
        listing = retrying(shown, policy, stop, source.list)
    except FetchError as exc:
        kept = _keep_previous(exc, previous, request.uri, name, version, dest)
        if kept is None:
            raise
        return kept
    model_name = name or listing.default_name
    staging = Staging(dest, staging_key(request.uri, model_name, version))
    staging.clean_stale()
    if listing.note:
        log.info("%s: %s", shown, listing.note)
    if listing.skipped:
        log.info(
            "not copying %d hidden file(s) or folder marker(s), e.g. %s",
            len(listing.skipped),
            listing.skipped[0],
        )
    if (
        not request.force
        and previous is not None
        and previous.same_request(request.uri, model_name, version)
        and unchanged(previous, listing)
        and previous.files_present(dest)
    ):
        staging.discard()
        log.info(
            "%s already holds %s (fetched %s): %s unchanged, nothing to do",
            dest,
            ", ".join(previous.entries),
            previous.fetched_at,
            shown,
        )
        return _already_there(previous)

    single = listing.kind == "file"
    archive = single and is_archive(listing.files[0].path)
    layout: Layout | None = None
    if not archive:
        layout = plan([f.path for f in listing.files], single_file=single, name=model_name, version=version)
        log.info(
            "fetching %s (%d file(s), %s) into %s as %s: %s",
            shown,
            len(listing.files),
            _total_text(listing),
            dest,
            _describe(layout),
            ", ".join(layout.entries),
        )
    else:
        log.info("fetching archive %s (%s) into %s", shown, _total_text(listing), dest)
    staging.create()
    state = State(staging.state_file)
    jobs = _jobs(listing, layout, staging)
    _check_space(jobs, state, dest)
    total = sum(f.size or 0 for f in listing.files)
    progress = Progress(total, interval=policy.progress_interval)
    _download_all(source, jobs, state, progress, policy, stop)

    if archive:
        layout = _unpack(staging, listing.files[0], model_name, version)
    assert layout is not None
    staging.prune_tree(layout)
    files = {p.target: (staging.tree / p.target).stat().st_size for p in layout.placements}
    manifest = Manifest(
        uri=request.uri,
        name=model_name,
        version=version,
        kind=layout.kind,
        entries=layout.entries,
        sources=source_record(listing),
        files=files,
        fetched_at=now_iso(),
        note=listing.note,
    )
    staging.swap(layout, manifest, previous)
    size = sum(files.values())
    elapsed = progress.elapsed()
    rate = f", {human(progress.transferred() / elapsed)}/s" if elapsed > 0 else ""
    log.info(
        "fetched %s into %s: %s (%d file(s), %s in %.1fs%s)",
        shown,
        dest,
        ", ".join(layout.entries),
        len(files),
        human(size),
        elapsed,
        rate,
    )
    return Result(False, layout.kind, layout.entries, len(files), size)


def _keep_previous(
    exc: FetchError, previous: Manifest | None, uri: str, name: str | None, version: str, dest: Path
) -> Result | None:
    """The store is unreachable, but DEST holds a complete earlier fetch of the same URI: serve
    that rather than fail the pod. A denial or a missing object still fails: those are news."""
    if not exc.transient or previous is None:
        return None
    if not previous.same_request(uri, name or previous.name, version) or not previous.files_present(dest):
        return None
    log.warning(
        "cannot check %s for changes (%s); keeping the copy fetched %s",
        display(uri),
        exc.cause,
        previous.fetched_at,
    )
    return _already_there(previous)


def _already_there(previous: Manifest) -> Result:
    """What DEST already holds from an earlier complete fetch, as this fetch's result."""
    return Result(True, previous.kind, previous.entries, len(previous.files), sum(previous.files.values()))


def _describe(layout: Layout) -> str:
    return {
        "file": "a single model file",
        "model-dir": "a model directory",
        "repository": "a model repository",
        "model-files": "one model's files",
    }[layout.kind]


def _total_text(listing: Listing) -> str:
    known = [f.size for f in listing.files if f.size is not None]
    text = human(sum(known))
    return text if len(known) == len(listing.files) else f"{text} + unknown"


@dataclass(frozen=True)
class _Job:
    file: RemoteFile
    incoming: Path
    final: Path


def _jobs(listing: Listing, layout: Layout | None, staging: Staging) -> list[_Job]:
    """Where each file is written while in flight and where it rests once verified."""
    if layout is None:  # an archive: verified into archive/, unpacked later
        file = listing.files[0]
        return [_Job(file, staging.incoming / file.path, staging.archive / file.path)]
    targets = {p.source: p.target for p in layout.placements}
    jobs = [_Job(f, staging.incoming / f.path, staging.tree / targets[f.path]) for f in listing.files]
    return sorted(jobs, key=lambda j: -(j.file.size or 0))  # largest first: the slowest start first


def _check_space(jobs: list[_Job], state: State, dest: Path) -> None:
    need = 0
    for job in jobs:
        if job.file.size is None or is_complete(job.file, job.final, state):
            continue
        need += job.file.size - min(job.file.size, resumable_bytes(job.file, job.incoming, state))
    free = shutil.disk_usage(dest).free
    if need > free:
        raise FetchError(
            f"not enough space in {dest}: {human(need)} to fetch, {human(free)} free; "
            "raise the volume's size (emptyDir sizeLimit, ephemeral-storage)"
        )


def _download_all(
    source: Source, jobs: list[_Job], state: State, progress: Progress, policy: Policy, stop: threading.Event
) -> None:
    def one(job: _Job) -> None:
        fetch_file(
            source,
            job.file,
            incoming=job.incoming,
            final=job.final,
            state=state,
            progress=progress,
            policy=policy,
            stop=stop,
        )

    if policy.jobs <= 1 or len(jobs) == 1:
        for job in jobs:
            one(job)
        return
    first: BaseException | None = None
    with ThreadPoolExecutor(max_workers=min(policy.jobs, len(jobs)), thread_name_prefix="fetch") as pool:
        futures = [pool.submit(one, job) for job in jobs]
        for future in as_completed(futures):
            try:
                future.result()
            except Cancelled:
                pass
            except BaseException as exc:
                if first is None:
                    first = exc
                    stop.set()  # the other files stop at their next chunk
    if first is not None:
        raise first


def _unpack(staging: Staging, file: RemoteFile, name: str, version: str) -> Layout:
    shutil.rmtree(staging.extracted, ignore_errors=True)
    shutil.rmtree(staging.tree, ignore_errors=True)
    staging.tree.mkdir(parents=True)
    paths = extract(staging.archive / file.path, staging.extracted, label=file.path)
    prefix, inner = unwrap_single_folder(paths)
    layout = plan(inner, single_file=False, name=name, version=version)
    for placement in layout.placements:
        target = staging.tree / placement.target
        target.parent.mkdir(parents=True, exist_ok=True)
        (staging.extracted / (prefix + placement.source)).rename(target)
    shutil.rmtree(staging.extracted, ignore_errors=True)
    log.info(
        "unpacked %s: %d file(s) as %s: %s",
        file.path,
        len(layout.placements),
        _describe(layout),
        ", ".join(layout.entries),
    )
    return layout
