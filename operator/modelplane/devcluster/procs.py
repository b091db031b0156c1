"""Start, identify and stop the devcluster's background processes.

A pid alone is not an identity (pids are reused), so each record also keeps the executable and the
kernel's start time of the process; ``stop`` signals a pid only when both still match.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Proc:
    """A process we started, as recorded in the state file."""

    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: start time in clock ticks since boot
    exe: str
    argv: tuple[str, ...]
    log: str
    port: int = 0
    health: str = ""  # URL that answers 200 when the process is healthy

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Proc:
        return cls(**{**data, "argv": tuple(data.get("argv", ()))})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """Distinct free ports (held open together, so none is handed out twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of a pid, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def start_ticks(pid: int) -> int:
    stat = _stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return stat[1]


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return ""


def is_ours(proc: Proc) -> bool:
    """True while the recorded process is alive and still the one we started."""
    stat = _stat(proc.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    if stat[1] != proc.start_ticks:
        return False
    exe = _exe(proc.pid)
    return not exe or not proc.exe or exe == proc.exe


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    port: int = 0,
    health: str = "",
) -> Proc:
    """Start a process in its own session (it outlives the command that started it), logging to a file."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    # Popen returns once the child has exec'd, so /proc names the real executable (for a script,
    # its interpreter).
    exe = _exe(process.pid)
    return Proc(name, process.pid, start_ticks(process.pid), exe, tuple(argv), str(log), port, health)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(proc: Proc, timeout: float = 15) -> str:
    """SIGTERM, then SIGKILL after ``timeout``; never signals a process that is not ours."""
    if not is_ours(proc):
        _reap(proc.pid)
        return "not running"
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not is_ours(proc):
            return "stopped"
        time.sleep(delay)  # polling a process's exit: there is no portable wait for a non-child
        delay = min(delay * 2, 0.5)
    os.kill(proc.pid, signal.SIGKILL)
    for _ in range(50):
        _reap(proc.pid)
        if not is_ours(proc):
            return "killed"
        time.sleep(0.1)
    return "did not exit"


def probe(url: str, context: ssl.SSLContext | None = None, timeout: float = 2) -> tuple[bool, str]:
    """(healthy, detail) for a health URL: healthy means HTTP 200."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            body = response.read(200).decode(errors="replace").strip()
            return response.status == 200, body or str(response.status)
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}: {error.read(200).decode(errors='replace').strip()}"
    except (urllib.error.URLError, OSError) as error:
        return False, str(getattr(error, "reason", error))


def tail(path: Path | str, lines: int = 30) -> str:
    """The last lines of a log file ('' when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
