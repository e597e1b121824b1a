"""Fixtures shared by every tier of tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty real Redis for one test (it may kill, stop or restart it)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server
