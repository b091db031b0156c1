"""Tier markers follow the folder a test lives in, so `-m unit` never needs a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = {"unit", "runtime", "integration"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        try:
            tier = Path(item.path).relative_to(root).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
