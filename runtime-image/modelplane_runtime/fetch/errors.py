"""Errors that end a fetch with one line a person can act on.

A kubelet shows the last line of a failed init container (or /dev/termination-log) as the pod's
termination message, so every failure is a FetchError whose text names the cause; the command adds
the URI in front of it.
"""

from __future__ import annotations


class FetchError(Exception):
    """A fetch failed. `transient` errors (timeouts, dropped connections, 5xx, 429) are retried."""

    def __init__(
        self,
        cause: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.transient = transient
        self.retry_after = retry_after
        self.status = status  # the HTTP status behind it, when there was one


class UsageError(FetchError):
    """Bad arguments (URI, scheme, name, version): retrying cannot help, exit code 2."""


ACCESS_DENIED = "access denied, check credentialsSecret"


def status_error(status: int, *, what: str, detail: str = "", access_hint: str = ACCESS_DENIED) -> FetchError:
    """Map an HTTP status (from any scheme's API) to a FetchError that says what it means."""
    suffix = f": {detail}" if detail else ""
    if status == 404:
        return FetchError(f"{what} not found (HTTP 404){suffix}", status=status)
    if status in (401, 403):
        return FetchError(f"{access_hint} (HTTP {status}){suffix}", status=status)
    if status in (408, 429) or status >= 500:
        return FetchError(f"{what}: server answered HTTP {status}{suffix}", transient=True, status=status)
    return FetchError(f"{what}: HTTP {status}{suffix}", status=status)
