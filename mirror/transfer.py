"""Sending a blob answer to a client: its headers and Range, zero-copy `sendfile` from a stored file or
from the growing temp file of a fill (with a copying fallback), and cutting the connection when a fill
fails, or a stored blob's first-serve re-hash does not match, so that the client sees a short body
instead of corrupt bytes."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import IO

from aiohttp import web

from mirror.answers import BlobAnswer, Check, Filling, InMemory, Stored, Upstream
from mirror.fills import Fill, FillFailed
from mirror.passthrough import PassThroughFailed, continue_fill
from mirror.ranges import parse_range

#: Bytes per step of the copying fallback.
STEP = 1024 * 1024
BLOB_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Sent:
    """How a blob answer went: the response, the body bytes sent, and whether the body is whole."""

    response: web.StreamResponse
    count: int
    complete: bool


def blob_headers(digest: str, size: int | None) -> dict[str, str]:
    """The headers of a blob GET or HEAD."""
    headers = {
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Content-Type": BLOB_TYPE,
        "Cache-Control": "max-age=31536000",
    }
    if size is not None:
        headers["Content-Length"] = str(size)
    return headers


async def send_blob(request: web.Request, answer: BlobAnswer, digest: str) -> Sent:
    """Send `answer` (200, or 206 for a satisfiable single Range); a failing fill aborts the connection."""
    size = answer.size
    wanted = parse_range(request.headers.get("Range"), size) if size is not None else None
    response = web.StreamResponse(status=206 if wanted else 200, headers=blob_headers(digest, size))
    if wanted is not None:
        response.headers["Content-Range"] = wanted.content_range()
        response.content_length = wanted.length
    elif size is not None:
        response.content_length = size
    start, end = (wanted.start, wanted.end + 1) if wanted else (0, size)
    await response.prepare(request)
    match answer.body:
        case InMemory(data):
            await response.write(data[start:end])
            sent = len(data[start:end])
        case Stored(blob, check):
            stop = blob.size if end is None else end
            if check is None:  # verified since start-up: the fast path
                await send_file(request, response, blob.file, start, stop - start)
            elif not await _send_checked(request, response, blob.file, start, stop - start, check):
                _abort(request)
                return Sent(response, max(0, stop - start - 1), complete=False)
            sent = stop - start
        case Filling(fill):
            try:
                sent = await send_fill(request, response, fill, start, end)
                if fill.unstored is not None:  # the blob is not stored: the rest from upstream
                    whole = wanted is None
                    sent += await continue_fill(answer.rest, response, fill, start + sent, end, whole)
            except (FillFailed, PassThroughFailed):
                _abort(request)
                return Sent(response, 0, complete=False)
        case Upstream(through, reason):
            try:
                whole = wanted is None
                sent = await through.send(response, start, end, size=size, reason=reason, whole=whole)
            except PassThroughFailed:
                _abort(request)
                return Sent(response, 0, complete=False)
    await response.write_eof()
    return Sent(response, sent, complete=True)


async def _send_checked(
    request: web.Request, response: web.StreamResponse, file: IO[bytes], offset: int, count: int, check: Check
) -> bool:
    """Send `count` bytes of `file` but the last while the blob is re-hashed; the last only if the
    bytes matched (False: the caller cuts the connection, one byte short)."""
    held = 1 if count > 0 else 0
    await send_file(request, response, file, offset, count - held)
    if not await check.passed():
        return False
    await send_file(request, response, file, offset + count - held, held)
    return True


def _abort(request: web.Request) -> None:
    """Cut the client's connection so it sees a short body and retries, instead of waiting forever."""
    if request.transport is not None:
        request.transport.abort()


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
            written = await fill.available(pos, end)
            if written <= pos:
                break
            stop = written if end is None else min(written, end)
            if fill.data is not None:  # the whole body, in memory: one write
                await response.write(memoryview(fill.data)[pos:stop])
                pos = stop
                continue
            if file is None:  # opened once bytes exist: the temp file is created after the headers
                file = fill.reader_file()
            await send_file(request, response, file, pos, stop - pos)
            pos = stop
    finally:
        if file is not None:
            file.close()
    return pos - start
