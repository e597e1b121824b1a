"""Moving a blob body from a socket into its temp file in a transfer thread, with as little work per byte
as the socket allows (the README's "How it works" has the figures that chose these ways).

- `FileSink` takes the bytes: written with one call per receive, hashed, counted, the first `skip`
  dropped. With a plain TCP socket and a file open for reading too, they go socket → pipe → file by
  `splice` (the kernel moves them into the file's pages; nothing is copied through user space) and are
  hashed from a read-only mapping of the pages just written. Otherwise (TLS, a write-only descriptor,
  bytes to drop) one reused buffer receives them (`readinto1`), written and hashed from that memory:
  no new object per receive.
- `Coalesced` hands the counts to the event loop with at most one wake-up pending: while the loop has
  not run the last one, later counts add to it instead of queueing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable

from mirror.upstream.transport import HashUpdate, OnBytes

#: Bytes per receive: the reused buffer, the pipe's capacity and the most one `splice` moves. At 1 MiB
#: a cold GiB takes about 2,300 receives on loopback (each returns what has arrived, ~450 KiB);
#: 256 KiB and 4 MiB measured the same CPU per GiB, within the noise.
BUFFER = 1024 * 1024
#: The buffer of a body that will be spliced: its first receive only takes over what http.client read
#: along with the headers (at most its 8 KiB buffer) or a small body whole, so no MiB is allocated.
FIRST_RECEIVE = 64 * 1024
_SET_PIPE_SIZE = getattr(fcntl, "F_SETPIPE_SZ", 1031)


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
        _write_all(self.fd, data)
        self.hash_update(data)
        self.on_chunk(len(data))

    def readable(self) -> bool:
        """Whether `fd` can also be read (mapped), which hashing spliced bytes needs."""
        return fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR

    def take_spliced(self, pipe: int, count: int) -> None:
        """Move `count` bytes waiting in `pipe` into the file, then hash and count them."""
        start = os.lseek(self.fd, 0, os.SEEK_CUR)
        left = count
        while left:
            moved = os.splice(pipe, self.fd, left)
            if not moved:
                raise OSError("the pipe ran dry")  # cannot happen: the bytes are in it
            left -= moved
        base = start - start % mmap.ALLOCATIONGRANULARITY
        length = start + count - base
        with (
            mmap.mmap(self.fd, length, access=mmap.ACCESS_READ, offset=base) as pages,
            memoryview(pages)[start - base :] as written,
        ):
            self.hash_update(written)
        self.on_chunk(count)


def can_splice(sock: socket.socket | None, sink: FileSink) -> bool:
    """Whether the body can go socket → pipe → file: plain TCP (TLS bytes need decrypting in user
    space) with a read timeout, and a descriptor the hash can map."""
    return (
        hasattr(os, "splice")
        and sock is not None
        and not isinstance(sock, ssl.SSLSocket)
        and sock.fileno() >= 0
        and not os.get_blocking(sock.fileno())  # a blocking socket's splice waits for the whole count
        and sink.readable()
    )


class Splicer:
    """Moves what arrives on a plain TCP socket into a pipe of `BUFFER` bytes (or the system's default
    size, when the per-user pipe quota refuses more), waiting for it at most the socket's timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._fd = sock.fileno()
        timeout = sock.gettimeout()
        self._timeout = None if timeout is None else timeout * 1000  # poll's unit: ms
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self.pipe, self._into = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        with contextlib.suppress(OSError):  # smaller pipe, more calls
            fcntl.fcntl(self._into, _SET_PIPE_SIZE, BUFFER)

    def receive(self, count: int) -> int:
        """Up to `count` bytes into the (empty) pipe; 0 at the end of the stream. Raises TimeoutError
        and OSError (a reset, a socket shut down under it)."""
        while True:
            if not self._poller.poll(self._timeout):
                raise TimeoutError("timed out")
            try:
                return os.splice(self._fd, self._into, count, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                continue  # woken without bytes to move: wait again

    def close(self) -> None:
        os.close(self.pipe)
        os.close(self._into)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]
