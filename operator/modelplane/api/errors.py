"""Validation errors as lines that start with the field's path, the way kubectl users read them."""

from __future__ import annotations

from pydantic import ValidationError


def describe(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: `<prefix><path>: <message>`, e.g. `spec.gpu.count: must be absent or 1 ...`."""
    lines = []
    for problem in error.errors():
        path = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(
            f"{prefix}{path}: {message}" if path else f"{prefix.rstrip('.') or '(document)'}: {message}"
        )
    return "\n".join(lines)
