"""`modelplane serve`: parse the operator's flags, prepare the process, run the server.

Settings given here override the repository's config.pbtxt. The process is set up for a pod with
a read-only root filesystem: every cache torch, inductor or Triton might write points at the
temporary directory, and nothing imports torch before that is done.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

from modelplane_runtime import __version__
from modelplane_runtime import options as defaults
from modelplane_runtime.options import ServeOptions
from modelplane_runtime.repository import FORMATS

PRECISIONS = ("fp32", "fp16", "bf16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelplane serve",
        description="Serve models over the Open Inference Protocol v2 (HTTP and gRPC), callable by tritonclient.",
    )
    add = parser.add_argument
    add(
        "--model-repository",
        required=True,
        type=Path,
        metavar="PATH",
        help="a Triton-style repository (<repo>/<model>/[config.pbtxt] + <version>/model.*), "
        "one model folder, or one model file",
    )
    add(
        "--model-name",
        help="serve only this model (the name clients use; default: every model / the file's name)",
    )
    add(
        "--model-version",
        help="serve only this version (default: the config's version_policy, else the latest)",
    )
    add("--model-format", choices=FORMATS, help="the model's format (default: detected from the files)")
    add(
        "--max-batch-size",
        type=_non_negative,
        metavar="ROWS",
        help="dynamic batching: the most rows stacked into one execution (0 disables batching)",
    )
    add(
        "--max-queue-delay-us",
        type=_non_negative,
        metavar="US",
        help="dynamic batching: how long a request may wait for others to batch with",
    )
    add("--precision", choices=PRECISIONS, help="cast the model and its float inputs (default: as saved)")
    add(
        "--instances", type=_positive, help="model instances (each with its own thread; default: config or 1)"
    )
    add(
        "--auth-token-file",
        type=Path,
        metavar="PATH",
        help="require 'Authorization: Bearer <token>' (gRPC metadata 'authorization'); health stays open",
    )
    add("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    add("--http-port", type=_port, default=defaults.DEFAULT_HTTP_PORT, help="default: %(default)s")
    add("--grpc-port", type=_port, default=defaults.DEFAULT_GRPC_PORT, help="default: %(default)s")
    add("--metrics-port", type=_port, default=defaults.DEFAULT_METRICS_PORT, help="default: %(default)s")
    add(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu, cuda or cuda:N (default: %(default)s)",
    )
    add("--threads", type=_positive, help="torch intra-op threads (default: the CPUs this container may use)")
    add("--no-warmup", action="store_true", help="skip the warm-up inference before reporting ready")
    add(
        "--drain-seconds",
        type=float,
        default=defaults.DEFAULT_DRAIN_SECONDS,
        help="on SIGTERM, how long in-flight requests may take to finish (default: %(default)s)",
    )
    add(
        "--max-request-bytes",
        type=_positive,
        default=defaults.DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body / gRPC message (default: %(default)s)",
    )
    add(
        "--max-header-bytes",
        type=_positive,
        default=defaults.DEFAULT_MAX_HEADER_BYTES,
        help="largest HTTP request line + headers (default: %(default)s)",
    )
    add("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add("--log-format", default="text", choices=("text", "json"))
    add("--version", action="version", version=f"modelplane-runtime {__version__}")
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), got {value}")
    return value


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure_logging(level: str, form: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def prepare_environment() -> None:
    """Point every cache at the temporary directory (writable in the pod), unless already set."""
    tmp = tempfile.gettempdir()
    for key, value in {
        "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/torchinductor",
        "TRITON_CACHE_DIR": f"{tmp}/triton",
        "TORCH_HOME": f"{tmp}/torch",
        "TORCH_EXTENSIONS_DIR": f"{tmp}/torch_extensions",
        "PYTORCH_KERNEL_CACHE_PATH": f"{tmp}/torch/kernels",
        "CUDA_CACHE_PATH": f"{tmp}/nv/ComputeCache",
        "XDG_CACHE_HOME": f"{tmp}/cache",
        "MPLCONFIGDIR": f"{tmp}/matplotlib",
    }.items():
        os.environ.setdefault(key, value)


def _resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available on this machine")
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) present")
        return f"cuda:{index}"
    raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {requested!r}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.log_level, args.log_format)
    log = logging.getLogger("modelplane.runtime")
    prepare_environment()

    token = None
    if args.auth_token_file is not None:
        try:
            token = args.auth_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            log.error("--auth-token-file: cannot read %s: %s", args.auth_token_file, exc)
            return 2
        if not token:
            log.error("--auth-token-file: %s is empty", args.auth_token_file)
            return 2

    from modelplane_runtime.models import default_threads

    threads = args.threads or default_threads()
    try:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        device = _resolve_device(args.device)
    except ValueError as exc:
        log.error("%s", exc)
        return 2

    options = ServeOptions(
        repository=args.model_repository,
        model_name=args.model_name,
        model_version=args.model_version,
        model_format=args.model_format,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        precision=args.precision,
        instances=args.instances,
        auth_token=token,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        device=device,
        threads=threads,
        warmup=not args.no_warmup,
        drain_seconds=args.drain_seconds,
        max_request_bytes=args.max_request_bytes,
        max_header_bytes=args.max_header_bytes,
    )

    import uvloop

    from modelplane_runtime.server import serve

    code = uvloop.run(serve(options))
    stuck = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if stuck or code != 0:
        # A model still loading, or running past the drain deadline, must not hold (or crash) the exit.
        if stuck:
            log.warning(
                "exiting with %d thread(s) still busy: %s", len(stuck), ", ".join(t.name for t in stuck)
            )
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
