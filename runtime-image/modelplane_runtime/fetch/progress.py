"""Progress in the log: per file when it starts and ends, and totals at a steady interval.

Lines, not bars: an init container's log is read with `kubectl logs`, where a carriage-return bar
turns into noise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("modelplane.fetch")


def human(n: float) -> str:
    """Bytes in binary units, e.g. 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable; keeps type checkers content


class Progress:
    """Thread-safe byte counters. `advance` logs at most every `interval` seconds."""

    def __init__(self, total: int, *, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0  # bytes transferred in this run (resumed bytes not counted as speed)
        self._have = 0  # bytes on disk, resumed ones included
        self._files: dict[str, tuple[int, int | None]] = {}  # path -> (have, size)
        self._started = clock()
        self._last_log = self._started

    def start_file(self, path: str, size: int | None, offset: int) -> None:
        with self._lock:
            self._files[path] = (offset, size)
            self._have += offset
        size_text = human(size) if size is not None else "unknown size"
        if offset:
            log.info("%s: resuming at %s of %s", path, human(offset), size_text)
        else:
            log.info("%s: downloading %s", path, size_text)

    def restart_file(self, path: str, lost: int) -> None:
        """The server ignored a range request: the bytes already counted are fetched again."""
        with self._lock:
            _, size = self._files.get(path, (0, None))
            self._files[path] = (0, size)
            self._have -= lost

    def advance(self, path: str, n: int) -> None:
        with self._lock:
            have, size = self._files.get(path, (0, None))
            self._files[path] = (have + n, size)
            self._done += n
            self._have += n
            now = self._clock()
            if now - self._last_log < self.interval:
                return
            self._last_log = now
            line = self._line(now)
        log.info("%s", line)

    def finish_file(self, path: str, seconds: float, fetched: int, verified: str) -> None:
        with self._lock:
            self._files.pop(path, None)
        rate = f", {human(fetched / seconds)}/s" if seconds > 0 and fetched else ""
        log.info("%s: done, %s in %.1fs%s, %s", path, human(fetched), seconds, rate, verified)

    def _line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        pct = f" ({100 * self._have / self.total:.0f}%)" if self.total else ""
        files = ", ".join(
            f"{path} {human(have)}/{human(size) if size is not None else '?'}"
            for path, (have, size) in sorted(self._files.items())
        )
        return (
            f"progress: {human(self._have)} of {human(self.total)}{pct}, "
            f"{human(self._done / elapsed)}/s; {files}"
        )

    def elapsed(self) -> float:
        return self._clock() - self._started

    def transferred(self) -> int:
        with self._lock:
            return self._done
