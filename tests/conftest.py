"""Fixtures for every tier: no test may block the event loop of a mirror running in-process; the log
lines of an in-process mirror go to stderr (as `mirror serve` sends them), never into the stdout a
command test reads; a real Redis for the shared mode's tests; the hypothesis profile."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from blockbuster import BlockBuster, blockbuster_ctx
from hypothesis import settings

from tests.support.redis import RedisServer


@pytest.fixture(autouse=True)
def logs_to_stderr() -> Iterator[None]:
    """structlog's default output (stdout) moved to this test's stderr."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test in which the mirror blocks the event loop."""
    with blockbuster_ctx() as bb:
        # The one non-blocking os.sendfile the mirror tries before loop.sendfile, which makes the same
        # call on the same socket from asyncio's code (allowed there).
        bb.functions["os.sendfile"].can_block_in("mirror/transfer.py", "_sendfile_now")
        yield bb


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty real Redis for one test (it may kill, stop or restart it)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


# Property tests stay bounded in `make test`: few examples each, and no per-example deadline (the
# shared 2-core machine makes timings meaningless; "no timing thresholds in unit tests").
settings.register_profile("mirror", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("mirror")
