"""Validation errors as lines that start with the field's path, the way kubectl users read them."""

from __future__ import annotations

from pydantic import ValidationError


def describe(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: `<prefix><path>: <message>`, e.g. `spec.gpu.count: must be absent or 1 ...`."""
    lines = []
    for problem in error.errors():
        path = ""
        for part in problem["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(
            f"{prefix}{path}: {message}" if path else f"{prefix.rstrip('.') or '(document)'}: {message}"
        )
    return "\n".join(lines)
