"""Room in the cache for fills under way: a fill reserves its blob's size (the upstream's Content-Length)
when its headers arrive, and the store's blobs plus every reservation stay within `cache_max_bytes` and
within the filesystem's free space. Room is made by the store's own eviction plan (`Evictor.make_room`);
a blob that cannot get room (larger than the cache, or than what eviction can free) is not stored, and
its readers are served straight from upstream (`passthrough.py`). Digests refused lately are remembered
for a while, so their next readers go straight to upstream instead of starting a doomed fill."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirror.metrics import Metrics
from mirror.storage.blobs import BlobStore
from mirror.storage.eviction import Evictor

#: Free bytes kept beside a blob on the cache filesystem for the index's own writes (a commit's row,
#: SQLite's journal, the manifest index): a blob that would leave less is not stored.
INDEX_HEADROOM = 4 * 1024**2
#: Digests remembered as not storable, and for how long: bounded memory, and a disk that got room again
#: (eviction, an operator) is used again within a minute.
REFUSED_DIGESTS = 4096
REFUSED_SECONDS = 60.0


def reason_of_os_error(exc: OSError) -> str:
    """The reason a write of the cache failed: the disk or quota full, or another disk fault."""
    return "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "disk_error"


@dataclass(frozen=True, slots=True)
class Refused:
    """No room for a blob: why (one of `metrics.PASSTHROUGH_REASONS`), in words."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Usage:
    """What a reservation is decided on: bytes of stored blobs, bytes reserved by other fills and what
    they have still to write, free bytes on the cache filesystem."""

    stored: int
    reserved: int
    pending: int
    free: int


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """`cache_max_bytes` and its watermarks, in bytes."""

    limit: int
    high: int
    low: int


def eviction_target(size: int, usage: Usage, limits: CacheLimits) -> int | Refused:
    """The stored bytes to evict down to so that a blob of `size` fits (`usage.stored` when nothing has
    to go), or why it cannot fit whatever is evicted. Pure.

    Past the high watermark the store goes down to the low one, as after a commit (reservations
    counted); a blob too big for that only evicts what it needs. The filesystem must also have the
    blob's bytes free beside what other fills are still to write, and `INDEX_HEADROOM`."""
    if size > limits.limit:
        return Refused("too_large", f"blob of {size} bytes is larger than cache_max_bytes ({limits.limit})")
    after = usage.reserved + size
    if after > limits.limit:
        return Refused("cache_full", f"fills under way hold {usage.reserved} of {limits.limit} bytes")
    target = usage.stored
    if usage.stored + after > limits.high:
        target = limits.low - after if limits.low >= after else limits.limit - after
    short = size + usage.pending + INDEX_HEADROOM - usage.free
    if short > 0:
        target = min(target, usage.stored - short)
        if target < 0:
            return Refused("disk_full", f"{usage.free} bytes free on the cache filesystem for {size}")
    return target


class Reservation:
    """Bytes a fill may write; released by `Room.commit` (atomically with the commit) or `release`."""

    def __init__(self, room: Room, digest: str, size: int, written: Callable[[], int]) -> None:
        self._room = room
        self.digest = digest
        self.size = size
        self.written = written  # the fill's progress: what it has still to write is size - written()

    def release(self) -> None:
        """Give the bytes back (idempotent; blocking while a commit holds the count: run it in a thread)."""
        self._room.forget(self)


#: What `Room.reserve` may run right after holding a reservation, in the same thread step.
Then = Callable[[Reservation], None]


class Room:
    """The reservations of fills under way, against the store's limit and the filesystem's free space."""

    def __init__(self, store: BlobStore, evictor: Evictor, limits: CacheLimits, metrics: Metrics) -> None:
        self._store = store
        self._evictor = evictor
        self._limits = limits
        self._metrics = metrics
        self._held: dict[Reservation, None] = {}  # insertion-ordered set
        self._total = 0  # their bytes (read without the lock: an int)
        # The store's bytes and the reservations change together; it is held across a commit and an
        # index read, so only threads take it, never the event loop.
        self._count = threading.Lock()
        self._deciding = asyncio.Lock()  # one reservation decided at a time
        self._refused: OrderedDict[str, tuple[float, str, int | None]] = OrderedDict()

    @property
    def reserved(self) -> int:
        """Bytes reserved by fills under way."""
        return self._total

    def used(self) -> int:
        """Stored blob bytes plus reserved bytes, read together (blocking: the index is read)."""
        with self._count:
            return self._store.blob_bytes() + self._total

    async def reserve(
        self, digest: str, size: int, written: Callable[[], int], then: Then | None = None
    ) -> Reservation | Refused:
        """Room for `size` bytes of `digest`, evicting first if needed; or why there is none.

        `then` runs in the same thread step as the hold, right after it (blocking: a blob whose bytes
        are all in memory is written and committed there, `wholefill.py`); if it raises, the
        reservation is released and the error raised."""
        async with self._deciding:
            return await self._reserve(digest, size, written, then)

    async def _reserve(
        self, digest: str, size: int, written: Callable[[], int], then: Then | None
    ) -> Reservation | Refused:
        reservation = Reservation(self, digest, size, written)
        # The common case in one thread hop: the blob fits as things are, and is held at once.
        decided = await asyncio.to_thread(self._hold_if_room, reservation, then)
        if decided is None:
            return reservation
        if isinstance(decided, Refused):
            return decided
        usage = decided
        target = eviction_target(size, usage, self._limits)
        assert not isinstance(target, Refused)  # refusals were answered in the thread
        await self._evictor.make_room(target)
        usage = await asyncio.to_thread(self._usage)
        if usage.stored + usage.reserved + size > self._limits.limit:
            return Refused("cache_full", "pinned blobs and blobs being read leave no room")
        if size + usage.pending + INDEX_HEADROOM > usage.free:
            return Refused("disk_full", f"{usage.free} bytes free on the cache filesystem for {size}")
        await asyncio.to_thread(self._hold, reservation, then)
        return reservation

    def _hold_if_room(self, reservation: Reservation, then: Then | None = None) -> Usage | Refused | None:
        """Hold `reservation` if it fits without evicting (None); else why it cannot fit, or the usage
        room must be made from (blocking: run it in a thread)."""
        usage = self._usage()
        target = eviction_target(reservation.size, usage, self._limits)
        if isinstance(target, Refused) or target < usage.stored:
            return target if isinstance(target, Refused) else usage
        self._hold(reservation, then)
        return None

    def _hold(self, reservation: Reservation, then: Then | None = None) -> None:
        with self._count:
            self._held[reservation] = None
            self._total += reservation.size
        self._metrics.cache_reserved.inc(reservation.size)
        if then is not None:
            try:
                then(reservation)
            except BaseException:
                self.forget(reservation)
                raise

    def _usage(self) -> Usage:
        with self._count:
            held = list(self._held)
            stored = self._store.blob_bytes()
        pending = sum(max(0, r.size - r.written()) for r in held)  # `written` is an int read
        return Usage(stored, sum(r.size for r in held), pending, _free_bytes(self._store.tmp_dir))

    def commit(self, reservation: Reservation | None, digest: str, temp: Path, size: int) -> None:
        """`BlobStore.commit`, releasing the reservation in the same step, so the blob's bytes are never
        counted twice nor not at all (blocking: run it in a thread)."""
        with self._count:
            self._store.commit(digest, temp, size)
            if reservation is not None:
                self._drop(reservation)

    def forget(self, reservation: Reservation) -> None:
        with self._count:
            self._drop(reservation)

    def _drop(self, reservation: Reservation) -> None:
        """With the count held: `reservation` no longer counts (once)."""
        if self._held.pop(reservation, 0) is None:
            self._total -= reservation.size
            self._metrics.cache_reserved.dec(reservation.size)

    def refuse(self, digest: str, size: int | None, reason: str) -> None:
        """Remember for `REFUSED_SECONDS` that `digest` (of `size` bytes) could not be stored."""
        self._refused[digest] = (time.monotonic() + REFUSED_SECONDS, reason, size)
        self._refused.move_to_end(digest)
        while len(self._refused) > REFUSED_DIGESTS:
            self._refused.popitem(last=False)

    def refused(self, digest: str) -> tuple[str, int | None] | None:
        """Why `digest` was not stored lately, and its size (None: try to store it)."""
        found = self._refused.get(digest)
        if found is None:
            return None
        until, reason, size = found
        if time.monotonic() >= until:
            del self._refused[digest]
            return None
        return reason, size


def _free_bytes(directory: Path) -> int:
    """Free bytes for the cache; an OSError (the directory gone) fails the reservation as `disk_error`,
    not as a full disk."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize
