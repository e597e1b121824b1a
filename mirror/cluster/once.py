"""One upstream manifest request across replicas: while one replica fetches a manifest (a tag, say, when
a rollout makes every node pull the same image at once), the others wait for its result in Redis instead
of each spending a request of the upstream's rate limit.

A replica takes a short Redis lock (`SET NX PX`) for the request; if another holds it, it looks for the
result (what the holder stores behind the in-process cache) every `POLL` seconds; once the lock is
free without a result (the holder got a 404 or failed), or after `WAIT`, it asks the upstream itself.
Whoever takes the lock looks for a result first: a holder may have stored it and unlocked in between.
Without Redis it asks at once: a lost lock costs a request, never a pull.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mirror.cluster.coordinator import Coordinator
from mirror.metrics import Metrics

T = TypeVar("T")

#: Seconds between two looks for another replica's result: a manifest GET takes tens of milliseconds.
POLL = 0.05
#: Seconds a replica waits for another's result before it asks the upstream itself (a slow upstream
#: then costs a second request, not a stalled pull).
WAIT = 2.0
#: Seconds the lock lasts: beyond WAIT, so waiters never see it expire while they wait.
LOCK_TTL = 2 * WAIT


class SharedFetches:
    """`run(key, fetch, ready)`: `fetch()` on one replica at a time per key, `ready()` on the others."""

    def __init__(self, coordinator: Coordinator, metrics: Metrics) -> None:
        self._coordinator = coordinator
        self._metrics = metrics

    async def run(
        self, key: str, fetch: Callable[[], Awaitable[T]], ready: Callable[[], Awaitable[T | None]]
    ) -> tuple[T, bool]:
        """The result, and whether another replica fetched it."""
        deadline = time.monotonic() + WAIT
        while True:
            token, busy = await self._coordinator.lock(key, LOCK_TTL)
            if token is not None:  # first, or the holder finished (a 404, say, or just now)
                try:
                    # A holder that stored its result and unlocked between our last look and this
                    # lock leaves the result behind it: look once more before asking the upstream.
                    found = await ready()
                    if found is not None:
                        self._metrics.manifests_from_replicas.inc()
                        return found, True
                    return await fetch(), False
                finally:
                    await self._coordinator.unlock(key, token)
            if not busy or time.monotonic() >= deadline:  # no Redis, or waited long enough
                return await fetch(), False
            await asyncio.sleep(POLL)
            found = await ready()
            if found is not None:
                self._metrics.manifests_from_replicas.inc()
                return found, True
