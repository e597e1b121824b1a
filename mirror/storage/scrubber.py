"""The scrubber: re-hashes stored blobs in the background at a bounded rate, so bytes that rot on disk
are dropped (and fetched again when next asked for) even in blobs nobody requests.

It walks the index a batch of rows at a time (memory does not grow with the store), hashes in threads
(`rehash.Verifier`, one re-hash per file shared with first serves) at most `scrub_rate` bytes a second,
drops what does not match (`blob_corrupt`, `mirror_blob_corrupt_total{by="scrub"}`) and marks the rest
verified, so their next serve goes the plain fast path. Its first pass after start-up skips blobs
already verified (by a commit or a serve); later passes, every `SCRUB_EVERY` seconds from the start of
the previous one, re-hash everything, since bytes rot after they were checked as well.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from mirror.storage.blobs import BlobStore
from mirror.storage.rehash import Verifier

log = structlog.get_logger("mirror.scrubber")

#: Seconds from the start of one pass to the start of the next: a day, so a store is re-read daily at
#: most, whatever its size; a pass that takes longer (a large store at a low rate) is followed at once.
SCRUB_EVERY = 24 * 3600.0


class Pace:
    """At most `rate` bytes a second, with no credit for idle time (no bursts after a pause); records
    what it made its callers wait, so a test can see the limit reached without timing anything."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")  # when the next byte may be read
        self.bytes = 0  # bytes accounted
        self.waits = 0  # times a caller had to wait
        self.waited = 0.0  # seconds callers were told to wait, in all

    async def __call__(self, count: int) -> None:
        """`count` bytes were just read: wait until reading them kept within the rate."""
        now = self._clock()
        self._next = max(self._next, now) + count / self.rate
        self.bytes += count
        delay = self._next - now
        if delay > 0:
            self.waits += 1
            self.waited += delay
            await self._sleep(delay)


@dataclass(slots=True)
class PassResult:
    """What one pass did."""

    checked: int = 0  # blobs re-hashed (or joined while a serve re-hashed them)
    skipped: int = 0  # already verified since start-up (first pass only)
    corrupt: int = 0
    gone: int = 0  # deleted while the pass went by (evicted, or stored anew)
    bytes: int = 0


class Scrubber:
    """Passes over the store, one after another, for the app's lifetime (`run`, one tracked task)."""

    def __init__(self, store: BlobStore, verifier: Verifier, rate: float, every: float = SCRUB_EVERY) -> None:
        self._store = store
        self._verifier = verifier
        self._every = every
        self.pace = Pace(rate)
        self.passes = 0

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.scrub(skip_verified=self.passes == 0)
            self.passes += 1
            await asyncio.sleep(max(0.0, self._every - (time.monotonic() - started)))

    async def scrub(self, skip_verified: bool) -> PassResult:
        """One pass over every stored blob; logs `cache_scrubbed`."""
        started = time.monotonic()
        done = PassResult()
        after = 0
        while batch := await asyncio.to_thread(self._store.files_after, after):
            after = batch[-1].rowid
            for where in batch:
                if skip_verified and where.rowid in self._store.verified:
                    done.skipped += 1
                    continue
                verdict = await self._verifier.rehash(where, urgent=False, pace=self.pace).verdict()
                done.checked += 1
                done.bytes += where.size
                done.corrupt += verdict is False
                done.gone += verdict is None
        log.info(
            "cache_scrubbed",
            checked=done.checked,
            skipped=done.skipped,
            corrupt=done.corrupt,
            gone=done.gone,
            bytes=done.bytes,
            seconds=round(time.monotonic() - started, 3),
        )
        return done
