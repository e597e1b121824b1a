"""Room for a fill: what is evicted first, and when a blob cannot be stored at all (pure)."""

from __future__ import annotations

import errno

import pytest

from mirror.storage.room import (
    INDEX_HEADROOM,
    CacheLimits,
    Refused,
    Usage,
    eviction_target,
    reason_of_os_error,
)

LIMITS = CacheLimits(limit=1000, high=950, low=900)
ROOMY = 10**12  # free bytes on a filesystem that is not the constraint


def _usage(stored: int, reserved: int = 0, pending: int = 0, free: int = ROOMY) -> Usage:
    return Usage(stored=stored, reserved=reserved, pending=pending, free=free)


@pytest.mark.parametrize(
    ("size", "usage", "target"),
    [
        (100, _usage(500), 500),  # under the high watermark: nothing goes
        (100, _usage(900), 800),  # past it: down to the low watermark, the blob counted
        (100, _usage(700, reserved=200), 600),  # reservations count as stored
        (950, _usage(600), 50),  # too big for the low watermark: only what it needs goes
        (1000, _usage(10), 0),  # as big as the cache: everything else goes
    ],
)
def test_eviction_target_keeps_stored_plus_reserved_within_the_limit(
    size: int, usage: Usage, target: int
) -> None:
    """The target leaves room for the blob beside every reservation, under the watermarks."""
    assert eviction_target(size, usage, LIMITS) == target
    assert target + usage.reserved + size <= LIMITS.limit


@pytest.mark.parametrize(
    ("size", "usage", "reason"),
    [
        (1001, _usage(0), "too_large"),  # larger than the whole cache
        (300, _usage(0, reserved=800), "cache_full"),  # fills under way hold the room
        (100, _usage(0, free=50), "disk_full"),  # nothing stored to evict, disk short
        (268_000_000, _usage(0, free=64 * 1024**2), "disk_full"),  # the row, under a large limit
    ],
)
def test_eviction_target_refuses_what_cannot_fit(size: int, usage: Usage, reason: str) -> None:
    """A blob larger than the cache, than what fills under way leave, or than the disk can free is refused."""
    limits = LIMITS if size < 10**6 else CacheLimits(50 * 1024**3, 47 * 1024**3, 45 * 1024**3)
    refused = eviction_target(size, usage, limits)
    assert isinstance(refused, Refused)
    assert refused.reason == reason


def test_disk_short_evicts_what_frees_the_bytes() -> None:
    """A filesystem short of free bytes (other fills' pending bytes and the headroom counted) evicts
    that much more, even under the cache's limit."""
    free = INDEX_HEADROOM + 100
    assert eviction_target(300, _usage(500, reserved=50, pending=50, free=free), LIMITS) == 250


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "disk_full"),
        (errno.EDQUOT, "disk_full"),
        (errno.EFBIG, "disk_full"),
        (errno.EIO, "disk_error"),
    ],
)
def test_os_errors_name_their_reason(code: int, reason: str) -> None:
    """A full disk or quota is `disk_full`; any other write failure `disk_error`."""
    assert reason_of_os_error(OSError(code, "x")) == reason
