"""The Registrar: tells Redis which blobs this replica holds, in batches, so peers fetch from it.

A committed blob is announced within `FLUSH_SECONDS`, together with every other one committed
meanwhile, in one pipeline; every `hint_ttl / 2` the whole store is announced again (the hints expire
after `hint_ttl`, so a replica that died is forgotten). A blob hit costs no Redis operation. Every
`HEARTBEAT` seconds one `SET NX` of a marker key keeps the Redis breaker's view (and `/readyz`, and the
alert) current without traffic, and tells a Redis that restarted empty: the whole store is then
announced again at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from mirror.cluster.coordinator import Coordinator

log = structlog.get_logger("mirror.cluster")

#: Seconds between flushes of newly committed digests: announcements are batched, not per blob.
FLUSH_SECONDS = 1.0
#: Digests per pipeline: bounds one Redis round trip (and its time) when a whole store is announced.
BATCH = 500
#: Seconds between heartbeats (one Redis operation each).
HEARTBEAT = 15.0


class Registrar:
    """Batches announcements of held digests; its task is started by `start` and ended by `close`."""

    def __init__(self, coordinator: Coordinator, held: Callable[[], list[str]]) -> None:
        self._coordinator = coordinator
        self._held = held  # every digest in the store (blocking: run in a thread)
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def add(self, digest: str) -> None:
        """Announce `digest` with the next batch."""
        self._pending.add(digest)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hint registrar")

    async def _run(self) -> None:
        refresh_every = self._coordinator.hint_ttl / 2
        next_refresh = next_beat = time.monotonic()  # the whole store at start-up
        while True:
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + HEARTBEAT
                if await self._coordinator.heartbeat():  # Redis is new or was emptied
                    next_refresh = now
            if now >= next_refresh:
                self._pending.update(await asyncio.to_thread(self._held))
                next_refresh = now + refresh_every
            await self.flush()
            await asyncio.sleep(FLUSH_SECONDS)

    async def flush(self) -> None:
        """Send what is pending, BATCH digests per pipeline."""
        while self._pending:
            batch = [self._pending.pop() for _ in range(min(BATCH, len(self._pending)))]
            if not await self._coordinator.register(batch):
                self._pending.update(batch)  # Redis is unreachable: try again with the next flush
                return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
