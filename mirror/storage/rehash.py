"""Re-hashing stored blobs, so that bytes rotted on disk are dropped instead of served.

A blob not verified since start-up (`BlobStore.verified`) is re-hashed on its first serve: the serve
sends all but the last byte with `sendfile` while the file is hashed beside it (`pread` in threads, a
chunk per hop) and the last byte only once the digest matched; on a mismatch the entry is dropped, the
client's connection is cut one byte short (it retries, and the retry is a cold miss) and
`mirror_blob_corrupt_total` counts it. The background scrubber re-hashes the same way, paced.

There is one re-hash per file at a time: concurrent first serves of a blob (and the scrubber) share it,
and a serve that joins a paced scrubber re-hash makes it go at full speed. A re-hash runs on its own
once started (a client that leaves does not stop it, its verdict is still worth having) and is
cancelled on shutdown; a client still waiting then gets no verdict and is cut off, as for a mismatch.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine

import structlog

from mirror.metrics import Metrics
from mirror.oci import Digest
from mirror.storage.blobs import BlobFile, BlobStore, StoredBlob
from mirror.storage.hashing import READ_BYTES, ReadBuffers

log = structlog.get_logger("mirror.rehash")

#: Bytes hashed per thread hop: a hop (tens of microseconds) is a few per cent of hashing them (~0.6 ms),
#: and shutdown and pacing act within a millisecond; one read into the thread's buffer (`ReadBuffers`).
CHUNK = READ_BYTES

Pacer = Callable[[int], Awaitable[None]]


class Rehash:
    """One re-hash of one stored file, and the verdict everyone serving it waits for."""

    def __init__(self, where: BlobFile, urgent: bool, fd: int | None) -> None:
        self.where = where
        self.urgent = urgent  # a client waits for it: never paced
        self.task: asyncio.Task[bool | None] | None = None
        self.fd = fd  # its own descriptor of the file, closed once the task is done (no thread uses it)

    def close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    async def passed(self) -> bool:
        """True when the bytes hash to the digest; False on a mismatch, a read error or shutdown."""
        return await self.verdict() is True

    async def verdict(self) -> bool | None:
        """True (verified), False (dropped), None (no verdict: the file is gone, or the mirror is
        stopping). Waiting is shielded: the re-hash outlives a waiter that is cancelled."""
        assert self.task is not None, "verdict() before the re-hash started"
        try:
            return await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if self.task.cancelled():
                return None
            raise


class Verifier:
    """The re-hashes under way, by index rowid; every one is a task, cancelled on `close()`."""

    def __init__(self, store: BlobStore, metrics: Metrics, buffers: ReadBuffers | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self._running: dict[int, Rehash] = {}
        self._tasks: set[asyncio.Task[bool | None]] = set()  # every re-hash, also one superseded above
        self._buffers = buffers if buffers is not None else ReadBuffers()

    def check_for(self, blob: StoredBlob) -> Rehash | None:
        """The first-serve re-hash of `blob`, joined or started now; None when it was verified."""
        if blob.verified or blob.where is None:
            return None
        return self.rehash(blob.where, urgent=True, fd=blob.file.fileno())

    def rehash(
        self, where: BlobFile, urgent: bool, fd: int | None = None, pace: Pacer | None = None
    ) -> Rehash:
        """The re-hash of `where`'s file, joined if under way (made urgent if `urgent`), else started:
        of the descriptor `fd` (duplicated, so the caller may close its own), or of the file by path.
        `pace` is awaited with each chunk's size while no client waits."""
        found = self._running.get(where.rowid)
        if found is not None and found.where.path == where.path:
            found.urgent = found.urgent or urgent
            return found
        rehash = Rehash(where, urgent, os.dup(fd) if fd is not None else None)
        task = asyncio.create_task(self._run(rehash, pace), name=f"rehash {where.digest}")
        rehash.task = task
        self._running[where.rowid] = rehash
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._forget(rehash))
        return rehash

    def _forget(self, rehash: Rehash) -> None:
        """The re-hash ended (even if cancelled before it began): its descriptor is closed."""
        rehash.close_fd()
        if self._running.get(rehash.where.rowid) is rehash:
            del self._running[rehash.where.rowid]

    async def _run(self, rehash: Rehash, pace: Pacer | None) -> bool | None:
        """The verdict: True (marked verified), False (dropped), None (the file is gone: no verdict)."""
        where = rehash.where

        def open_file() -> int:  # the descriptor lands in `rehash` even if this task is cancelled
            rehash.fd = os.open(where.path, os.O_RDONLY)
            return rehash.fd

        try:
            fd = rehash.fd if rehash.fd is not None else await _finished(asyncio.to_thread(open_file))
            detail = await self._hash(rehash, fd, pace)
        except FileNotFoundError:
            return None
        except OSError as exc:  # EIO and friends: bytes the disk cannot give back are as bad as wrong ones
            detail = f"read failed: {exc.strerror}"
        except Exception:  # a bug or a surprise: no verdict (a waiting client is cut off), and we hear of it
            log.exception("blob_rehash_crashed", digest=where.digest)
            return None
        rehash.close_fd()
        if detail is None:
            self._store.verified.add(where.rowid)
            return True
        found_by = "serve" if rehash.urgent else "scrub"
        self._store.verified.discard(where.rowid)  # so it is never served unchecked, dropped or not
        try:
            dropped = await asyncio.to_thread(self._store.drop_file, where)
        except Exception:  # the index failed: the verdict stands, the entry is dropped another time
            log.exception("blob_corrupt_drop_failed", digest=where.digest)
            dropped = False
        if dropped:
            self._metrics.blob_corrupt.labels(found_by).inc()
        log.warning(
            "blob_corrupt",
            digest=where.digest,
            bytes=where.size,
            found_by=found_by,
            detail=detail,
            dropped=dropped,
        )
        return False

    async def _hash(self, rehash: Rehash, fd: int, pace: Pacer | None) -> str | None:
        """Hash the file behind `fd`; None when it matches the digest, else what is wrong."""
        where = rehash.where
        expected = Digest.parse(where.digest)
        hasher = expected.hasher()

        hash_range = self._buffers.hash_range
        total = 0
        while count := await _finished(asyncio.to_thread(hash_range, fd, hasher, total, total + CHUNK)):
            total += count
            self._metrics.rehashed_bytes.labels("serve" if rehash.urgent else "scrub").inc(count)
            if pace is not None and not rehash.urgent:
                await pace(count)
        if total != where.size:
            return f"the file holds {total} bytes, the index {where.size}"
        if hasher.hexdigest() != expected.hex:
            return f"the bytes do not hash to {where.digest}"
        return None

    async def close(self) -> None:
        """Cancel the re-hashes under way and wait for them (their descriptors are closed)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _finished(hop: Coroutine[object, object, int]) -> int:
    """`await hop` (a thread hop opening or reading the file); if cancelled meanwhile, the thread is
    waited for before the cancellation goes on, so the descriptor is never closed under it."""
    future = asyncio.ensure_future(hop)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise
