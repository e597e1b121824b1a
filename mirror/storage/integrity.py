"""The start-up integrity pass, in the background, so that a store of a million blobs serves at once.

It checks every index row against its file (dropping rows whose file is gone or has another size) and
then every blob directory for files no row names (left by a crash between the rename into the store and
the index insert), a batch at a time at a bounded rate, so it never holds the whole listing in memory
nor takes the disk from clients. Until it has passed a blob, serving that blob checks its size anyway
(`BlobStore.open`), so nothing wrong is served meanwhile.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from mirror.storage.blobs import BATCH, BlobStore

log = structlog.get_logger("mirror.integrity")

#: Index rows (or blob files) checked per second at most: about one `stat` each, a small share of a disk.
CHECK_RATE = 20_000


async def check_store(store: BlobStore, rate: float = CHECK_RATE) -> None:
    """Check the whole store once, at most `rate` rows or files a second; logs `cache_checked`."""
    started = time.monotonic()
    pause = BATCH / rate  # after each batch of rows; after each directory, in proportion to its files
    await asyncio.to_thread(store.ensure_indexes)
    missing = wrong_size = 0
    after: int | None = 0
    while after is not None:
        after, gone, wrong = await asyncio.to_thread(store.check_rows, after)
        missing, wrong_size = missing + gone, wrong_size + wrong
        await asyncio.sleep(pause)
    orphans = 0
    for directory in await asyncio.to_thread(store.blob_dirs):
        looked_at, removed = await asyncio.to_thread(store.remove_orphans, directory)
        orphans += removed
        await asyncio.sleep(looked_at / rate)
    log.info(
        "cache_checked",
        index_rows_dropped=missing + wrong_size,
        missing=missing,
        wrong_size=wrong_size,
        orphans_removed=orphans,
        seconds=round(time.monotonic() - started, 3),
    )
