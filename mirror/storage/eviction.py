"""Keeping the blob store under its size limit: when a commit takes it over the high watermark, least
recently used blobs are evicted down to the low watermark, in one batch, in a thread. Bytes reserved by
fills under way count as stored (`room.py`), and a fill about to start has room made for it at once
(`make_room`), with the same plan. Pinned blobs and blobs being read are never evicted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterator

import structlog

from mirror.metrics import Metrics
from mirror.storage.blobs import BlobEntry, BlobStore
from mirror.storage.failures import translated

log = structlog.get_logger("mirror.eviction")
#: Commits in a row that may skip the size check while the size last measured plus what they added stays
#: under the high watermark (a cold small blob then costs no index query and no thread hop); the next one
#: checks anyway, which bounds what another writer to the store could add unseen.
UNCHECKED_COMMITS = 64


class Evictor:
    """Runs at most one eviction batch at a time; `close()` waits for the one under way."""

    def __init__(
        self,
        store: BlobStore,
        metrics: Metrics,
        high: int,
        low: int,
        protected: Callable[[], Collection[str]],
        reserved: Callable[[], int] = lambda: 0,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self.high, self.low = high, low
        self._protected = protected
        self._reserved = reserved  # bytes fills under way will add
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._evicting = asyncio.Lock()  # one batch at a time, whoever asks
        self._size: int | None = None  # blob bytes as last measured, plus commits since
        self._unchecked = 0

    def poke(self, added: int | None = None) -> None:
        """Something was committed (`added` bytes, None: unknown): check the size soon (coalesced with
        a batch under way), unless the size known stays under the high watermark with it and the
        bytes reserved by fills under way."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        if (
            added is not None
            and self._size is not None
            and self._size + added + self._reserved() <= self.high
            and self._unchecked < UNCHECKED_COMMITS
        ):
            self._size += added
            self._unchecked += 1
            return
        self._task = asyncio.create_task(self._run(), name="eviction")

    async def _run(self) -> None:
        while True:
            self._again = False
            await self.evict_if_needed()
            if not self._again:
                return

    async def evict_if_needed(self) -> int:
        """One batch if the store (with reservations) is over the high watermark; the bytes evicted."""
        async with self._evicting:
            size = await asyncio.to_thread(self._store.blob_bytes)
            self._size, self._unchecked = size, 0
            reserved = self._reserved()
            if size + reserved <= self.high:
                return 0
            freed, after = await self._batch(max(0, self.low - reserved), size, "watermark")
        if after + reserved > self.high:
            log.warning("cache_over_limit", size=after, limit=self.high, reason="pinned or in use")
        return freed

    async def make_room(self, target: int) -> int:
        """Evict now until the stored blobs take at most `target` bytes (as far as pins and readers
        allow), for a fill that reserves room; the bytes evicted."""
        async with self._evicting:
            size = await asyncio.to_thread(self._store.blob_bytes)
            self._size, self._unchecked = size, 0
            if size <= target:
                return 0
            freed, _ = await self._batch(target, size, "reservation")
        return freed

    async def _batch(self, target: int, size: int, why: str) -> tuple[int, int]:
        count, freed = await asyncio.to_thread(_tally, self._store.evict(target, self._protected()))
        self._metrics.evictions.inc(count)
        self._metrics.evicted_bytes.inc(freed)
        after = await asyncio.to_thread(self._store.blob_bytes)
        self._size = after
        log.info(
            "cache_evicted",
            blobs=count,
            bytes=freed,
            size_before=size,
            size_after=after,
            target=target,
            high=self.high,
            low=self.low,
            reason=why,
        )
        return freed, after

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


@translated
def _tally(evicted: Iterator[BlobEntry]) -> tuple[int, int]:
    """Run an eviction to its end (blocking): how many blobs and bytes it deleted. The generator
    does its disk and index work here, so its failures are translated here."""
    count = freed = 0
    for entry in evicted:
        count, freed = count + 1, freed + entry.size
    return count, freed
