"""Moving a blob body from a socket into its temp file in a transfer thread, with as little work per byte
as a verifying, storing mirror can do on this path (the README's "How it works" has the figures that
chose this way and the ones measured and left out).

- `FileSink` takes the bytes: each receive (`readinto1`, into one buffer reused for the whole body, so
  no new object per receive) written by `storage.writing.write_all` and hashed from the same memory,
  the first `skip` dropped, the count handed on.
- `Coalesced` hands the counts to the event loop with at most one wake-up pending: while the loop has
  not run the last one, later counts add to it instead of queueing more.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from mirror.storage.writing import write_all
from mirror.upstream.transport import HashUpdate, OnBytes

#: Bytes per receive: the reused buffer of one download. At 1 MiB a cold GiB takes about 2,300
#: receives on loopback (each returns what has arrived, ~450 KiB); 256 KiB and 4 MiB measured the same
#: CPU per GiB, within the noise. A body smaller than this gets a buffer of its own size.
BUFFER = 1024 * 1024


class Coalesced:
    """`on_bytes` on the event loop for counts added in another thread, at most one call queued."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_bytes: OnBytes) -> None:
        self._loop = loop
        self._on_bytes = on_bytes
        self._lock = threading.Lock()
        self._pending = 0
        self._queued = False

    def add(self, count: int) -> None:
        """In the transfer thread: `count` more bytes; wakes the loop only if no call is queued."""
        with self._lock:
            self._pending += count
            if self._queued:
                return
            self._queued = True
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            count, self._pending, self._queued = self._pending, 0, False
        if count:
            self._on_bytes(count)


class FileSink:
    """Where received bytes go: `fd` at its position, the hash, the count; the first `skip` dropped.

    Raises OSError when writing fails (disk full, I/O error): the caller tells it from a broken body."""

    def __init__(self, fd: int, hash_update: HashUpdate, on_chunk: Callable[[int], None], skip: int) -> None:
        self.fd = fd
        self.hash_update = hash_update
        self.on_chunk = on_chunk
        self.skip = skip

    def take(self, data: memoryview) -> None:
        """Write, hash and count `data` (after dropping what is still to skip)."""
        if self.skip:
            dropped = min(self.skip, len(data))
            data, self.skip = data[dropped:], self.skip - dropped
            if not data:
                return
        write_all(self.fd, data)
        self.hash_update(data)
        self.on_chunk(len(data))
