"""The guard's limits, reached: the cache of verified pairs (its TTL and its size) and the bcrypt threads."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mirror.access import guard as guard_module
from mirror.access.guard import BCRYPT_THREADS, Guard
from mirror.metrics import Metrics
from tests.support.htpasswd import bcrypt_hash
from tests.support.polling import eventually

USERS = {f"user{i}": f"password{i}" for i in range(5)}


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    path.write_text("".join(f"{u}:{bcrypt_hash(p, cost=4)}\n" for u, p in USERS.items()))
    return path


async def _guard(
    htpasswd: Path,
    ttl: float = 60.0,
    cache_entries: int = guard_module.CACHE_ENTRIES,
    clock: Callable[[], float] | None = None,
) -> tuple[Guard, Metrics]:
    metrics = Metrics()
    extra = {"clock": clock} if clock is not None else {}
    guard = Guard(htpasswd, None, metrics, 1.0, ttl, cache_entries=cache_entries, **extra)
    await asyncio.to_thread(guard.load)
    return guard, metrics


def _verified(metrics: Metrics) -> float:
    value: float = metrics.auth_checks.labels("verified")._value.get()
    return value


def _header(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()


async def test_a_verified_pair_is_checked_again_once_its_ttl_ran_out(htpasswd: Path) -> None:
    """Within auth_cache_ttl a pair costs no bcrypt; after it (a clock moved on), bcrypt runs again."""
    now = [1000.0]
    guard, metrics = await _guard(htpasswd, ttl=60.0, clock=lambda: now[0])
    for _ in range(3):
        await guard.identify(_header("user0"))
    assert _verified(metrics) == 1
    now[0] += 61
    await guard.identify(_header("user0"))
    assert _verified(metrics) == 2
    await guard.close()


async def test_the_cache_of_verified_pairs_forgets_the_oldest_when_full(htpasswd: Path) -> None:
    """With room for 2 pairs, a third evicts the first: the first costs bcrypt again, the last does not."""
    guard, metrics = await _guard(htpasswd, cache_entries=2)
    for user in ("user0", "user1", "user2"):
        await guard.identify(_header(user))
    assert _verified(metrics) == 3
    await guard.identify(_header("user2"))
    assert _verified(metrics) == 3
    await guard.identify(_header("user0"))
    assert _verified(metrics) == 4
    await guard.close()


async def test_at_most_bcrypt_threads_checks_run_at_once(
    htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five different pairs at once: BCRYPT_THREADS checks run, the others wait in the queue."""
    running, release, lock = [0], threading.Event(), threading.Lock()

    def held_checkpw(password: bytes, hashed: bytes) -> bool:
        with lock:
            running[0] += 1
        release.wait(timeout=30)
        with lock:
            running[0] -= 1
        return True

    monkeypatch.setattr(guard_module, "_checkpw", held_checkpw)
    guard, _ = await _guard(htpasswd)
    checks = [asyncio.create_task(guard.identify(_header(user))) for user in USERS]
    await eventually(lambda: running[0] == BCRYPT_THREADS and guard._threads._work_queue.qsize() == 3)
    assert running[0] == BCRYPT_THREADS
    release.set()
    found = await asyncio.gather(*checks)
    assert [i.name for i in found] == list(USERS)
    await guard.close()
