"""The scrubber's pace and the verified-rows bitmap: pure, on a fake clock."""

from __future__ import annotations

from mirror.storage.scrubber import Pace
from mirror.storage.verified import VerifiedRows

MIB = 1024 * 1024


class FakeClock:
    """A clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_pace_holds_reads_to_the_rate() -> None:
    """Ten 1 MiB reads at 1 MiB/s wait one second each: ten seconds in all, every byte accounted."""
    clock = FakeClock()
    pace = Pace(MIB, clock, clock.sleep)
    for _ in range(10):
        await pace(MIB)
    assert (pace.bytes, pace.waits, pace.waited) == (10 * MIB, 10, 10.0)
    assert clock.now == 1010.0


async def test_pace_gives_no_credit_for_idle_time() -> None:
    """After an idle minute the next read still waits its share: no burst above the rate."""
    clock = FakeClock()
    pace = Pace(MIB, clock, clock.sleep)
    await pace(MIB)
    clock.now += 60.0
    await pace(MIB // 2)
    assert pace.waited == 1.5


def test_verified_rows_remember_and_forget() -> None:
    """Rowids added are members until discarded; others (and negative or non-int ones) never are."""
    rows = VerifiedRows()
    rows.add(7)
    rows.add(100_000)
    assert 7 in rows
    assert 100_000 in rows
    assert 8 not in rows
    assert 10**9 not in rows
    assert -1 not in rows
    rows.discard(7)
    assert 7 not in rows


def test_verified_rows_of_a_million_blobs_take_about_125_kb() -> None:
    """One bit per rowid: a million verified blobs hold under 130 KB, whatever order they came in."""
    rows = VerifiedRows()
    for rowid in range(1_000_000, 0, -1):
        rows.add(rowid)
    assert rows.nbytes < 130_000
    assert all(r in rows for r in (1, 500_000, 1_000_000))
