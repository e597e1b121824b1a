"""A small body read along with its headers, in the same transfer-thread step.

A cold small blob (a config, a tiny layer) otherwise costs a fill four more thread hand-offs after its
headers (the reservation, the temp file, the receive, the commit), each a wake-up of another thread
and of the event loop, for a few kilobytes. When the upstream announces a body of at most
`fill_memory_bytes`, the thread that read the headers goes on reading the body for as long as it keeps
arriving (`EARLY_WAIT` in all at most), without blocking on a body that stalls: what it got
is handed to the fill whole (verified and served from memory), or, when the body did not all come,
written first by the receive that takes over (`threaded.py`).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from io import BufferedReader

#: How long the early read waits for more of a small body: on loopback or a LAN the whole body comes
#: with its headers; a body still missing bytes after this is received the usual way (its headers
#: reach the clients this much later at most, its last byte no later).
EARLY_WAIT = 0.02


def read_early(fp: BufferedReader, sock: socket.socket, length: int, wait: float = EARLY_WAIT) -> bytes:
    """Up to `length` body bytes from `fp` (a response's buffered reader over `sock`): those buffered,
    those on the socket, and those that arrive within `wait` seconds. Blocking, for `wait` at most; a
    failing connection ends it quietly (the receive that follows sees the failure).

    Bytes are only ever taken from the reader's buffer (`peek`, then `read1` of what it holds), never
    by a receive into the caller's memory: over TLS a receive that finds no whole record raises, and
    one that raised after copying buffered bytes would lose them."""
    deadline = time.monotonic() + wait
    got = bytearray()
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        ended = False
        while len(got) < length:
            held = _buffered(fp)
            if held:
                got += fp.read1(min(held, length - len(got)))
                ended = False
            elif ended or not _readable(sock, deadline - time.monotonic()):
                break  # the body ended (readable, yet nothing to read twice), or is not coming yet
            else:
                ended = held == 0  # readable: one more look tells data from the end
    except OSError:
        pass
    finally:
        sock.settimeout(timeout)
    return bytes(got)


def _buffered(fp: BufferedReader) -> int | None:
    """Bytes in the reader's buffer after at most one non-blocking receive into it: None when nothing
    has arrived (TLS: no whole record yet), 0 when nothing is there (or the body ended)."""
    try:
        return len(fp.peek(1))
    except ssl.SSLWantReadError:
        return None


def _readable(sock: socket.socket, wait: float) -> bool:
    if wait <= 0:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(wait * 1000))
