"""`modelplane fetch URI DEST`: the model pod's init container.

Exit codes: 0 fetched (or already there), 1 the fetch failed, 2 bad arguments. On failure the last
log line is one sentence naming the URI and the cause; it is also written to the kubelet's
termination-message file when that exists and is writable.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from modelplane_runtime.fetch.errors import FetchError, UsageError
from modelplane_runtime.fetch.pipeline import Request, run
from modelplane_runtime.fetch.transfer import Policy
from modelplane_runtime.fetch.uris import display

log = logging.getLogger("modelplane.fetch")

EPILOG = """\
schemes: file:///path, http(s)://host/file[#sha256=HEX], s3://bucket/key, gs://bucket/key,
hf://[datasets/]org/repo[@revision][/path]. pvc:// is mounted by the operator, not fetched.

layout: a single file lands at DEST/NAME/VERSION/FILE; a folder with numeric version folders is
copied to DEST/NAME/; a model repository (sub-folders with config.pbtxt or version folders) is
copied as is; any other folder is one model's files: config.pbtxt and model.yaml go to DEST/NAME/,
the rest to DEST/NAME/VERSION/. Archives (.tar, .tar.gz, .tgz, .zip, ...) are unpacked first.

credentials come from the environment: AWS_* (s3), GOOGLE_OAUTH_ACCESS_TOKEN or
GOOGLE_APPLICATION_CREDENTIALS_JSON (gs), HF_TOKEN (hf), MODELPLANE_HTTP_AUTHORIZATION (http).
"""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelplane fetch",
        description="Fetch a model into a model repository folder (the model pod's init container).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("uri", help="where the model is (see schemes below)")
    parser.add_argument("dest", type=Path, help="the model repository folder to fill, e.g. /mnt/models")
    parser.add_argument("--name", help="model name (default: the file's stem or the folder's name)")
    parser.add_argument(
        "--version", default="1", help="model version for a single file or model files (default 1)"
    )
    parser.add_argument(
        "--force", action="store_true", help="fetch even if DEST already holds the same content"
    )
    parser.add_argument("--jobs", type=_count, default=4, help="files fetched in parallel (default 4)")
    parser.add_argument(
        "--retries", type=_count, default=5, help="retries per request after a transient error (default 5)"
    )
    parser.add_argument(
        "--retry-wait",
        type=_seconds,
        default=1.0,
        help="first retry backoff in seconds, doubling (default 1)",
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=60.0, help="network timeout in seconds (default 60)"
    )
    parser.add_argument(
        "--progress-interval", type=_seconds, default=10.0, help="seconds between progress lines (default 10)"
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=Path("/dev/termination-log"),
        help="where the kubelet reads the failure message (written only if it exists and is writable)",
    )
    return parser


def configure_logging() -> None:
    logger = logging.getLogger("modelplane.fetch")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s fetch: %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def write_termination_message(path: Path, message: str) -> None:
    """The kubelet shows this file's content as the container's termination message."""
    if path.is_file() and os.access(path, os.W_OK):
        with contextlib.suppress(OSError):
            path.write_text(message[:4000] + "\n")


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or an argparse error (already printed)
        return int(exc.code or 0)
    configure_logging()
    policy = Policy(
        retries=args.retries,
        retry_wait=args.retry_wait,
        timeout=args.timeout or 60.0,
        jobs=max(1, args.jobs),
        progress_interval=args.progress_interval,
    )
    request = Request(
        uri=args.uri,
        dest=args.dest,
        name=args.name,
        version=args.version,
        force=args.force,
        policy=policy,
        http_authorization=os.environ.get("MODELPLANE_HTTP_AUTHORIZATION") or None,
    )
    try:
        run(request)
    except UsageError as exc:
        message = f"fetch: {exc.cause}"
        code = 2
    except FetchError as exc:
        message = f"fetch {display(args.uri)} failed: {exc.cause}"
        code = 1
    except Exception as exc:  # a bug: keep the traceback in the log, still one line at the end
        log.exception("unexpected error")
        message = f"fetch {display(args.uri)} failed: unexpected {type(exc).__name__}: {exc}"
        code = 1
    else:
        return 0
    message = " ".join(message.split())
    log.error("%s", message)
    write_termination_message(args.termination_log, message)
    return code
