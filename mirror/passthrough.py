"""Pass-through: a blob the cache cannot store, streamed from upstream to one client without caching.

When a blob gets no room (larger than the cache, the disk full, a quota; `storage/room.py`) or writing
its temp file fails mid-way, its readers still get the whole blob: each one continues from its own
offset with its own ranged upstream request, and new readers of it get such a stream from the start.
Upstream bytes go through a pipe: a transfer thread receives them into it (hashing them, as a fill
does) and the event loop sends them on, so a slow client slows its own upstream stream, and memory
stays bounded. (A body received over the session, past `max_transfers`, writes the pipe from the
default executor: while its client lags, that write holds one of its threads.) An answer that is the
whole blob is verified: the bytes a fill already sent are hashed from its temp file, the rest as they
arrive, and the last byte is held back until the digest matches (a mismatch cuts the connection one
byte short). A ranged answer cannot be verified (the rest of the blob is never seen): only its length
is checked. A broken upstream body is resumed with Range like a fill's; the fill limits apply
(`fill_min_bytes` in `fill_min_window`, `fill_max_seconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable
from typing import IO

import structlog
from aiohttp import web

from mirror import oci
from mirror.fills import Fill, FillLimits
from mirror.metrics import Metrics
from mirror.resumes import receive_resuming
from mirror.storage.hashing import ReadBuffers
from mirror.storage.room import Room
from mirror.upstream.transport import BlobBody, BlobSource, BodyBroken, HashUpdate, unhashed

log = structlog.get_logger("mirror.passthrough")

#: Bytes taken from the pipe per step, and the pipe's capacity (Linux allows up to 1 MiB unprivileged):
#: what one pass-through holds in memory besides the transfer thread's buffer.
STEP = 1024 * 1024
PIPE_BYTES = 1024 * 1024


class PassThroughFailed(Exception):
    """The upstream stream failed, or its bytes were wrong: the client's connection must be cut."""


class PassThroughs:
    """What every pass-through needs (the fill limits, metrics), and the digests the cache refused
    lately (`Room.refused`), whose readers get a pass-through at once."""

    def __init__(
        self,
        limits: FillLimits,
        metrics: Metrics,
        room: Room | None = None,
        buffers: ReadBuffers | None = None,
    ) -> None:
        self._limits = limits
        self._metrics = metrics
        self._room = room
        self._buffers = buffers if buffers is not None else ReadBuffers()  # to hash a fill's bytes

    def of(self, source: BlobSource, name: str, digest: str) -> PassThrough:
        """A pass-through of `digest` from `source`."""
        return PassThrough(source, name, digest, self._limits, self._metrics, self._buffers)

    def refused(self, digest: str) -> tuple[str, int | None] | None:
        """Why `digest` could not be stored lately, and its size; None: a fill may try."""
        return self._room.refused(digest) if self._room is not None else None


class PassThrough:
    """Streams (the rest of) one blob from its source to clients, one upstream request per answer."""

    def __init__(
        self,
        source: BlobSource,
        name: str,
        digest: str,
        limits: FillLimits,
        metrics: Metrics,
        buffers: ReadBuffers,
    ) -> None:
        self.source, self.name, self.digest = source, name, digest
        self._limits = limits
        self._metrics = metrics
        self._buffers = buffers

    async def send(
        self,
        response: web.StreamResponse,
        start: int,
        end: int | None,
        *,
        size: int | None,
        reason: str,
        whole: bool,
        prefix: IO[bytes] | None = None,
    ) -> int:
        """Send bytes [start, end) (end None: to the blob's end) of a blob of `size` bytes (None: not
        known) on the prepared `response`; the count. `reason`: why the blob is not stored.

        `whole`: the answer is the whole blob, of which `prefix` (a file) holds the first `start` bytes
        already sent: it is verified. Raises PassThroughFailed when the client must be cut off."""
        self._metrics.blob_passthrough.labels(reason).inc()
        hasher = oci.Digest.parse(self.digest).hasher() if whole else None
        if hasher is not None and start:
            assert prefix is not None, "a whole answer continued mid-way needs the bytes already sent"
            hashed = await asyncio.to_thread(self._buffers.hash_range, prefix.fileno(), hasher, 0, start)
            if hashed != start:
                raise PassThroughFailed("the bytes already sent are no longer readable")
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._limits.max_seconds):
                sent = await self._stream(response, start, end, size, hasher)
        except TimeoutError:
            detail = f"longer than fill_max_seconds ({self._limits.max_seconds:g} s)"
            raise self._failed(start, detail) from None
        log.info(
            "blob_passed_through",
            digest=self.digest,
            reason=reason,
            offset=start,
            bytes=sent,
            verified=hasher is not None,
            seconds=round(time.monotonic() - started, 3),
        )
        return sent

    def _failed(self, offset: int, detail: str) -> PassThroughFailed:
        log.warning("blob_passthrough_failed", digest=self.digest, offset=offset, detail=detail)
        return PassThroughFailed(detail)

    async def _stream(
        self,
        response: web.StreamResponse,
        start: int,
        end: int | None,
        size: int | None,
        hasher: hashlib._Hash | None,
    ) -> int:
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe only means more steps
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        reader = asyncio.StreamReader(limit=STEP)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
            )
        except BaseException:
            os.close(write_fd)
            raise
        producer = asyncio.ensure_future(self._produce(write_fd, start, size, hasher))
        producer.add_done_callback(lambda _: os.close(write_fd))  # the reader sees the end
        pace = _Pace(self._limits)
        got = 0  # bytes taken from the pipe
        held = b""  # the last byte of a whole answer, until the digest matches
        ended = False  # the upstream stream ended (or failed)
        try:
            while end is None or start + got < end:
                data = await pace.next(reader)
                if not data:
                    ended = True
                    break
                if end is not None and hasher is None:
                    data = data[: end - start - got]
                got += len(data)
                if hasher is not None:
                    if held:
                        await response.write(held)
                    data, held = data[:-1], data[-1:]
                if data:
                    await response.write(data)
            if ended or hasher is not None:
                await asyncio.wait({producer})  # the upstream body ended: the hash is complete
                if (problem := producer.exception()) is not None:
                    raise self._failed(start + got, str(problem))
            self._check(start, end if end is not None else size, got, hasher)
        except _TooSlow as exc:
            raise self._failed(start + got, str(exc)) from None
        finally:
            transport.close()  # a pump blocked on the full pipe gets EPIPE and ends
            if not producer.done():
                producer.cancel()
            await asyncio.wait({producer})
            if not producer.cancelled():
                producer.exception()  # retrieved: what it was is in the failure raised, or moot
        if held:
            await response.write(held)
        return got

    def _check(self, start: int, stop: int | None, got: int, hasher: hashlib._Hash | None) -> None:
        if stop is not None and start + got != stop:
            detail = f"upstream sent {got} bytes from {start}, expected {stop - start}"
            raise self._failed(start + got, detail)
        if hasher is not None and hasher.hexdigest() != oci.Digest.parse(self.digest).hex:
            raise self._failed(start + got, f"upstream bytes do not hash to {self.digest}")

    async def _produce(self, fd: int, offset: int, size: int | None, hasher: hashlib._Hash | None) -> None:
        """Receive the blob from `offset` into the pipe `fd`, resuming a broken body with Range."""
        update = hasher.update if hasher is not None else unhashed
        await receive_resuming(
            _Piped(self, fd, offset, size, update),
            log=log,
            event="blob_passthrough_resumed",
            digest=self.digest,
            resumes=self._metrics.fill_resumes,
            give_up=BodyBroken,
        )


class _Piped:
    """A pass-through's upstream download (`resumes.Resumable`): the blob from `offset` to its end,
    into the pipe `fd`."""

    def __init__(
        self, through: PassThrough, fd: int, offset: int, size: int | None, update: HashUpdate
    ) -> None:
        self._through = through
        self._fd = fd
        self.offset = offset
        self._size = size
        self._update = update
        self._done = False

    async def next_body(self) -> BlobBody | None:
        if self._done:
            return None
        through = self._through
        return await through.source.open_blob(through.name, through.digest, offset=self.offset)

    async def receive(self, body: BlobBody, skip: int) -> bool:
        await body.pump_into(self._fd, self._update, self._count, skip)
        self._done = self._size is None or self.offset >= self._size
        return self._done

    def _count(self, count: int) -> None:
        self.offset += count


async def continue_fill(
    rest: Callable[[], PassThrough] | None,
    response: web.StreamResponse,
    fill: Fill,
    pos: int,
    end: int | None,
    whole: bool,
) -> int:
    """A reader of `fill`, which ended `unstored`, has sent up to `pos`: the rest from upstream (from
    `pos`, with its own ranged request, through the pass-through `rest` makes), verified against the
    fill's file when the answer is whole. Without `rest` (a peer's request: it goes upstream itself)
    the client is cut off."""
    assert fill.unstored is not None, "only a fill that cannot store its blob hands its readers on"
    if end is not None and pos >= end:
        return 0
    if rest is None:
        raise PassThroughFailed(f"blob not stored ({fill.unstored}); this answer has no upstream")
    through = rest()
    prefix = fill.reader_file() if whole and pos else None
    try:
        return await through.send(
            response, pos, end, size=fill.size, reason=fill.unstored, whole=whole, prefix=prefix
        )
    finally:
        if prefix is not None:
            prefix.close()


class _TooSlow(Exception):
    """Fewer than `fill_min_bytes` arrived in `fill_min_window` seconds of waiting for upstream."""


class _Pace:
    """The fills' minimum-throughput rule, counted only while the client's sender waits for upstream
    bytes (a slow client fills the pipe and stalls its upstream stream: that is not the upstream's
    fault)."""

    def __init__(self, limits: FillLimits) -> None:
        self._limits = limits
        self._waited = 0.0
        self._bytes = 0

    async def next(self, reader: asyncio.StreamReader) -> bytes:
        began = time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, self._limits.min_window - self._waited)):
                data = await reader.read(STEP)
        except TimeoutError:
            raise _TooSlow(
                f"upstream sent {self._bytes} bytes in {self._limits.min_window:g} s "
                f"(fewer than fill_min_bytes, {self._limits.min_bytes})"
            ) from None
        self._waited += time.monotonic() - began
        self._bytes += len(data)
        if self._bytes >= self._limits.min_bytes:
            self._waited, self._bytes = 0.0, 0
        return data
