"""Hashing a byte range of a file: the one read loop behind every hash of bytes already on disk.

A stored blob re-hashed (`mirror cache verify`, a first serve, the scrubber), the bytes of a fill's
temp file that side streams wrote ahead of its main stream, the prefix of a pass-through that a fill
already sent: each feeds a range of a file to a running hasher. `hash_range` reads the range into a
buffer the caller keeps (blocking: callers on the event loop run it in a thread), so hashing
allocates nothing per read; `ReadBuffers` keeps one such buffer per thread.
"""

from __future__ import annotations

import hashlib
import os
import threading

#: Bytes per read, and each buffer's size: large enough that a read's cost is a small part of hashing
#: it, small enough that the buffers stay small: the default executor's threads (at most 32) hold at
#: most 32 MiB.
READ_BYTES = 1024 * 1024


def hash_range(fd: int, hasher: hashlib._Hash, start: int, end: int | None, buffer: bytearray) -> int:
    """Feed bytes [start, end) of the file behind `fd` (end None: to the file's end) to `hasher`,
    reading them into `buffer`; how many there were (fewer than asked only where the file ends first).
    Blocking: run it in a thread from the event loop."""
    view = memoryview(buffer)
    offset = start
    while end is None or offset < end:
        want = len(view) if end is None else min(len(view), end - offset)
        count = os.preadv(fd, [view[:want]], offset)
        if not count:
            break
        hasher.update(view[:count])
        offset += count
    return offset - start


class ReadBuffers:
    """A read buffer per thread, made on its first use and reused for every range it hashes after:
    none per read, none per blob. Shared by everything that hashes files (a thread hashes one range at
    a time)."""

    def __init__(self, size: int = READ_BYTES) -> None:
        self._size = size
        self._local = threading.local()

    def hash_range(self, fd: int, hasher: hashlib._Hash, start: int, end: int | None) -> int:
        """`hash_range` into the calling thread's buffer (blocking: run it in a thread; the buffer is
        taken there, never on the event loop's thread for another one to use)."""
        return hash_range(fd, hasher, start, end, self._buffer())

    def _buffer(self) -> bytearray:
        buffer: bytearray | None = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = bytearray(self._size)
        return buffer
