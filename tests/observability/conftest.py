"""Fixtures for the observability tests: the promtool binary."""

from __future__ import annotations

import pytest

from tests.observability.promserver import binary


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian package prometheus)."""
    return binary("promtool")
