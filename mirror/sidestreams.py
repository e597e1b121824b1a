"""Range-first cold fills: a ranged upstream stream for a reader far ahead of a fill's front.

A fill's main stream downloads a blob in order. A reader whose Range starts more than `fill_range_gap`
bytes beyond that front (a lazy-pull snapshotter reading a table of contents at the end of a layer, a
client fetching one layer in parallel ranges) would wait until the front gets there. Instead a side
stream asks the upstream for that window alone (`Range: bytes=a-b`) and writes it into the same sparse
temp file through its own descriptor; the reader is served as soon as the bytes are present. The main
stream stops short of the window and hashes it from the file when it gets there (`Fills._download`),
so each byte is fetched once and the blob is still committed only once verified.

A side stream whose upstream answers anything but a 206 for exactly its window is dropped unread; one
that fails mid-way is dropped too, and the main stream covers what it did not bring; after either, the
fill tries no more side streams. At most
`fill_range_streams` run per fill and `fill_range_streams_total` in all: every one holds an upstream
connection and a transfer thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from mirror import errors
from mirror.extents import Window
from mirror.metrics import Metrics
from mirror.upstream import fields
from mirror.upstream.transport import BlobBody, BlobSource, BodyBroken, unhashed

if TYPE_CHECKING:
    from mirror.fills import Fill, FillLimits

log = structlog.get_logger("mirror.fills")

#: `Fills._pump`: (body, progress, fd, hash_update, on_bytes) → whether it was cut.
Pump = Callable[
    [BlobBody, Callable[[], int], int, Callable[[memoryview], object], Callable[[int], None]],
    Awaitable[bool],
]


class SideStreams:
    """The side streams of all fills: started on a reader's demand, stopped with their fill."""

    def __init__(self, limits: FillLimits, metrics: Metrics, pump: Pump) -> None:
        self._limits = limits
        self._metrics = metrics
        self._pump = pump
        self._tasks: dict[Fill, set[asyncio.Task[None]]] = {}
        # Side streams counted against `range_streams_total`: a window leaves this set before its fill
        # hears that it ended, so a reader turned away by the limit that asks again finds it free.
        self._running: set[Window] = set()

    def wanted(
        self, upstream: BlobSource, fill: Fill, pos: int, until: int | None, first: bool = True
    ) -> None:
        """A reader of `fill` waits for bytes [pos, until): start a side stream for them if they are
        far beyond the front, no stream brings them, and the limits allow one. A reader turned away by
        a limit asks again (`first` false) when one of this fill's side streams ends."""
        size = fill.size
        gap = self._limits.range_gap
        off = not self._limits.range_streams or not self._limits.range_streams_total
        if off or not fill.ranged or size is None or fill.finished or not fill.ready.is_set() or pos >= size:
            return
        if fill.present.run_from(pos) > pos or pos - fill.front <= gap or fill.window_at(pos) is not None:
            return
        if (
            len(fill.windows) >= self._limits.range_streams
            or len(self._running) >= self._limits.range_streams_total
        ):
            if first:
                self._metrics.range_streams.labels("limited").inc()
            return
        end = size if until is None else min(until, size)
        if (taken := fill.next_taken(pos)) is not None:
            end = min(end, taken)
        window = Window(pos, end)
        fill.windows.append(window)
        self._running.add(window)
        task = asyncio.create_task(self._run(upstream, fill, window), name=f"range {fill.digest} {pos}")
        self._tasks.setdefault(fill, set()).add(task)
        task.add_done_callback(lambda done: self._ended(fill, window, done))

    def _ended(self, fill: Fill, window: Window, task: asyncio.Task[None]) -> None:
        self._running.discard(window)  # also when it was cancelled before it began
        tasks = self._tasks.get(fill)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[fill]

    async def stop(self, fill: Fill) -> None:
        """Cancel `fill`'s side streams and wait until none touches its temp file any more."""
        tasks = list(self._tasks.get(fill, ()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, upstream: BlobSource, fill: Fill, window: Window) -> None:
        try:
            await self._fetch(upstream, fill, window)
        except (errors.RegistryError, BodyBroken, OSError) as exc:
            fill.ranged = False  # the main stream covers the rest; no more tries for this blob
            self._metrics.range_streams.labels("failed").inc()
            log.warning(
                "blob_range_stream_failed",
                digest=fill.digest,
                start=window.start,
                got=window.got,
                detail=str(exc),
            )
        except Exception:  # a bug: the main stream still covers the window, and we hear of it
            fill.ranged = False
            log.exception("blob_range_stream_crashed", digest=fill.digest, start=window.start)
        finally:
            self._running.discard(window)
            fill.drop(window)

    async def _fetch(self, upstream: BlobSource, fill: Fill, window: Window) -> None:
        """Fetch `window` into the temp file; raises when its body breaks off or ends early."""
        body = await upstream.open_blob(fill.name, fill.digest, window.start, window.end)
        try:
            if not _answers(body, window, fill.size):
                fill.ranged = False  # it would answer the next one the same way
                self._refused(fill, window, f"upstream answered {body.status} for a Range")
                return
            await fill.attached.wait()
            if fill.temp is None or fill.front >= window.start:
                self._refused(fill, window, "the main stream got there first")
                return
            fd = await asyncio.to_thread(_open_at, fill.temp, window.start)
            try:
                fill.activate(window)
                self._metrics.range_streams.labels("started").inc()
                log.info("blob_range_stream_started", digest=fill.digest, start=window.start, end=window.end)
                await self._pump(
                    body, lambda: window.got, fd, unhashed, lambda n: self._wrote(fill, window, n)
                )
            finally:
                await asyncio.to_thread(os.close, fd)
        finally:
            body.release()
        if window.front < window.end:
            raise BodyBroken("upstream body ended early")

    def _wrote(self, fill: Fill, window: Window, count: int) -> None:
        fill.side_wrote(window, count)
        self._metrics.range_bytes.inc(count)

    def _refused(self, fill: Fill, window: Window, detail: str) -> None:
        self._metrics.range_streams.labels("refused").inc()
        log.info("blob_range_stream_refused", digest=fill.digest, start=window.start, detail=detail)


def _answers(body: BlobBody, window: Window, size: int | None) -> bool:
    """Whether `body` is a 206 for exactly `window` of a blob of `size` bytes."""
    found = fields.content_range(body.headers.get("Content-Range")) if body.status == 206 else None
    return found is not None and found[:2] == (window.start, window.end) and found[2] in (size, None)


def _open_at(path: Path, offset: int) -> int:
    """A write descriptor of `path` of its own, at `offset`: the pump writes at the descriptor's offset."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
