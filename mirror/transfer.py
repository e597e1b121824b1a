"""Sending blob bytes to a client: zero-copy `sendfile` from a stored file or from the growing temp
file of a fill, with a copying fallback for event loops without native sendfile."""

from __future__ import annotations

import asyncio
import os
from typing import IO

from aiohttp import web

from mirror.fills import Fill

#: Bytes per step of the copying fallback.
STEP = 1024 * 1024


async def send_file(
    request: web.Request, response: web.StreamResponse, file: IO[bytes], offset: int, count: int
) -> None:
    """Send `count` bytes of `file` from `offset` on the prepared `response`."""
    if count <= 0:
        return
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    if response.content_length is None:
        # No length (a fill whose upstream sent none): the body is chunk-framed by the response writer,
        # which `sendfile` would bypass.
        await _copy(response, file, offset, count)
        return
    sent = _sendfile_now(transport, file, offset, count)
    offset, count = offset + sent, count - sent
    if not count:
        return
    try:
        await asyncio.get_running_loop().sendfile(transport, file, offset, count)
    except NotImplementedError:
        await _copy(response, file, offset, count)


def _sendfile_now(transport: asyncio.BaseTransport, file: IO[bytes], offset: int, count: int) -> int:
    """Bytes one `os.sendfile` sends at once on the client's plain-TCP socket, without the event loop's
    sendfile machinery (which waits for writability and restores the transport each call); 0 when data
    is queued in the transport ahead of them, the socket is full, or the connection is TLS."""
    if not isinstance(transport, asyncio.WriteTransport) or transport.get_write_buffer_size():
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return 0
    try:
        return os.sendfile(sock.fileno(), file.fileno(), offset, count)
    except (BlockingIOError, InterruptedError):
        return 0


async def _copy(response: web.StreamResponse, file: IO[bytes], offset: int, count: int) -> None:
    end = offset + count
    while offset < end:
        data = await asyncio.to_thread(os.pread, file.fileno(), min(STEP, end - offset), offset)
        if not data:
            raise ConnectionResetError("file shorter than announced")
        await response.write(data)
        offset += len(data)


async def send_fill(
    request: web.Request, response: web.StreamResponse, fill: Fill, start: int, end: int | None
) -> int:
    """Send bytes [start, end) of a fill as they are written; returns how many were sent.

    Raises FillFailed when the fill fails: the caller must cut the connection."""
    pos = start
    file: IO[bytes] | None = None
    try:
        while end is None or pos < end:
            written = await fill.available(pos)
            if written <= pos:
                break
            if file is None:  # opened once bytes exist: the temp file is created after the headers
                file = fill.reader_file()
            stop = written if end is None else min(written, end)
            await send_file(request, response, file, pos, stop - pos)
            pos = stop
    finally:
        if file is not None:
            file.close()
    return pos - start
