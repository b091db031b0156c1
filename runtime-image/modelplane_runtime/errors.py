"""One error type for every front end: the HTTP code and the gRPC status come from the same value.

Both front ends catch `ServeError`; anything else escaping a handler is a bug, answered as an
internal error and logged with its traceback.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    # value: (HTTP status, gRPC status code name)
    INVALID_ARGUMENT = (400, "INVALID_ARGUMENT")
    UNAUTHENTICATED = (401, "UNAUTHENTICATED")
    NOT_FOUND = (404, "NOT_FOUND")
    TOO_LARGE = (413, "RESOURCE_EXHAUSTED")
    INTERNAL = (500, "INTERNAL")
    UNAVAILABLE = (503, "UNAVAILABLE")

    @property
    def http(self) -> int:
        return self.value[0]

    @property
    def grpc_name(self) -> str:
        return self.value[1]


class ServeError(Exception):
    """A request that cannot be served; the message names what was wrong and is sent to the client."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def invalid(message: str) -> ServeError:
    return ServeError(Status.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServeError:
    return ServeError(Status.NOT_FOUND, message)


def unavailable(message: str) -> ServeError:
    return ServeError(Status.UNAVAILABLE, message)


class ModelLoadError(Exception):
    """A model that cannot be loaded: the message names the file or setting at fault."""
