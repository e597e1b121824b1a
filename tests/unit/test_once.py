"""SharedFetches: one replica asks the upstream per key; the others take its result."""

from __future__ import annotations

from typing import Any, cast

from mirror.cluster.coordinator import Coordinator
from mirror.cluster.once import SharedFetches
from mirror.metrics import Metrics


class Locks:
    """A coordinator's lock, scripted: `lock` answers from `answers`, one per call."""

    def __init__(self, *answers: tuple[str | None, bool]) -> None:
        self.answers = list(answers)
        self.unlocked: list[str] = []

    async def lock(self, key: str, ttl: float) -> tuple[str | None, bool]:
        return self.answers.pop(0)

    async def unlock(self, key: str, token: str) -> None:
        self.unlocked.append(token)


def _fetches(locks: Locks) -> SharedFetches:
    return SharedFetches(cast(Coordinator, locks), Metrics())


async def test_a_result_stored_just_before_the_lock_is_taken_is_not_fetched_again() -> None:
    """The holder stored its result and unlocked between a waiter's look and its lock: no second fetch."""
    locks = Locks((None, True), ("t", False))
    looks: list[Any] = [None, "stored by the holder"]
    fetched: list[str] = []

    async def fetch() -> str:
        fetched.append("upstream")
        return "fetched"

    async def ready() -> str | None:
        return cast(str | None, looks.pop(0))

    assert await _fetches(locks).run("k", fetch, ready) == ("stored by the holder", True)
    assert fetched == []
    assert locks.unlocked == ["t"]


async def test_the_lock_taken_with_no_result_anywhere_fetches_once() -> None:
    """First to ask: the lock, one look that finds nothing, one fetch, the lock given back."""
    locks = Locks(("t", False))

    async def fetch() -> str:
        return "fetched"

    async def ready() -> str | None:
        return None

    assert await _fetches(locks).run("k", fetch, ready) == ("fetched", False)
    assert locks.unlocked == ["t"]
