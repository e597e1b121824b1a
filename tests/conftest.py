"""Fixtures for every tier: no test may block the event loop of a mirror running in-process, and the
log lines of an in-process mirror go to stderr (as `mirror serve` sends them), never into the stdout a
command test reads."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import structlog
from blockbuster import BlockBuster, blockbuster_ctx


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
