"""The evictor's size checks: commits that keep the known size under the high watermark skip the index
query, at most `UNCHECKED_COMMITS` in a row; one that crosses it checks (and evicts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mirror.metrics import Metrics
from mirror.storage.blobs import BlobStore
from mirror.storage.eviction import UNCHECKED_COMMITS, Evictor
from tests.support.store import put_blob


class CountingStore(BlobStore):
    """A real store that counts its size queries."""

    queries = 0

    def blob_bytes(self) -> int:
        self.queries += 1
        return super().blob_bytes()


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(tmp_path)
    store.recover()
    return store


async def settled(evictor: Evictor) -> None:
    await evictor.close()  # waits for the check under way, if any


async def test_commits_under_the_watermark_skip_the_size_query(store: CountingStore) -> None:
    """After one measured check, commits that stay under the high watermark query nothing, until
    `UNCHECKED_COMMITS` have gone unchecked."""
    evictor = Evictor(store, Metrics(), high=10**9, low=10**8, protected=lambda: ())
    evictor.poke()
    await settled(evictor)
    assert store.queries == 1
    for _ in range(UNCHECKED_COMMITS):
        evictor.poke(1000)
        await settled(evictor)
    assert store.queries == 1
    evictor.poke(1000)
    await settled(evictor)
    assert store.queries == 2
    await asyncio.to_thread(store.close)


async def test_a_commit_that_crosses_the_watermark_evicts(store: CountingStore) -> None:
    """A commit whose bytes take the known size over the high watermark is checked and evicts."""
    metrics = Metrics()
    evictor = Evictor(store, metrics, high=150_000, low=50_000, protected=lambda: ())
    evictor.poke()
    await settled(evictor)
    await asyncio.to_thread(put_blob, store, b"a" * 100_000)
    evictor.poke(100_000)
    await settled(evictor)
    assert store.queries == 1  # still under: skipped
    await asyncio.to_thread(put_blob, store, b"b" * 100_000)
    evictor.poke(100_000)
    await settled(evictor)
    assert metrics.evictions._value.get() >= 1
    assert await asyncio.to_thread(store.blob_bytes) <= 50_000
    await asyncio.to_thread(store.close)
