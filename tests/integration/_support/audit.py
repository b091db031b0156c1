"""Read the API server's audit log (JSON lines, one event per request stage)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class AuditLog:
    path: Path

    def mark(self) -> int:
        """A position to read from later: only events after it count."""
        return self.path.stat().st_size if self.path.exists() else 0

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(since)
            data = handle.read().decode(errors="replace")
        events = []
        for line in data.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:  # a line still being written
                    continue
        return events

    def by_user(self, user: str, since: int = 0, verbs: Iterable[str] | None = None) -> list[dict[str, Any]]:
        wanted = set(verbs) if verbs is not None else None
        return [
            event
            for event in self.events(since)
            if event.get("user", {}).get("username") == user
            and (wanted is None or event.get("verb") in wanted)
        ]

    def writes_by(self, user: str, since: int = 0) -> list[dict[str, Any]]:
        return self.by_user(user, since, WRITE_VERBS)


def summary(event: dict[str, Any]) -> str:
    """One line per event: verb, object, response code."""
    ref = event.get("objectRef", {})
    target = "/".join(p for p in (ref.get("namespace"), ref.get("resource"), ref.get("name")) if p)
    return f"{event.get('verb')} {target or event.get('requestURI')} -> {event.get('responseStatus', {}).get('code')}"
