"""A fill's main stream: the blob in order from the front, around the bytes side streams bring.

The main stream hashes every byte in order (the digest needs them so). Where a side stream
(`sidestreams.py`) puts bytes ahead of it, its body ends short of them: it is cut when the side stream
starts, and re-opened with a Range that stops at them. When the front reaches bytes already present it
hashes them from the temp file instead of fetching them again, and goes on after them. Each body is
received, and resumed when it breaks, by the one resume rule (`resumes.py`); `Fills._download` checks
the size and digest once the stream has no body left.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mirror.resumes import MAX_RESUMES
from mirror.storage.hashing import ReadBuffers
from mirror.upstream import fields
from mirror.upstream.transport import BlobBody, BlobSource, HashUpdate, OnBytes

if TYPE_CHECKING:
    from mirror.fills import Fill

#: Bytes hashed per thread hop when the main stream hashes what side streams wrote (from the page cache).
HASH_STEP = 4 * 1024 * 1024


#: `Fills._pump`: (body, progress, fd, hash_update, on_bytes, skip, cut) → whether it was cut.
MainPump = Callable[
    [BlobBody, Callable[[], int], int, HashUpdate, OnBytes, int, asyncio.Future[None] | None],
    Awaitable[bool],
]


class MainStream:
    """A fill's main stream (`resumes.Resumable`): the blob in order from the front, each body ending
    short of the bytes side streams bring, which it hashes from the file instead."""

    def __init__(
        self,
        upstream: BlobSource,
        fill: Fill,
        fd: int,
        hasher: hashlib._Hash,
        body: BlobBody,
        pump: MainPump,
        buffers: ReadBuffers,
    ) -> None:
        self._upstream = upstream
        self._fill = fill
        self._fd = fd
        self._hasher = hasher
        self._body: BlobBody | None = body  # the first body, opened with the fill's headers
        self._pump = pump
        self._buffers = buffers
        self._ended = False  # a body of unknown size ended: that is the blob's end
        self._redone = 0  # bodies dropped unread for a side stream that came meanwhile

    @property
    def offset(self) -> int:
        return self._fill.front

    async def next_body(self) -> BlobBody | None:
        fill = self._fill
        while not self._ended:
            await self._absorb()
            if fill.size is not None and fill.front >= fill.size:
                return None
            if fill.window_at(fill.front) is not None:  # a side stream brings the next bytes
                if self._body is not None:
                    self._body.release()
                    self._body = None
                await fill.changed()
                continue
            body = self._body if self._body is not None else await self._reopen()
            self._body = None
            if _overlaps(fill) and self._redone < MAX_RESUMES:
                # A side stream came meanwhile: its bytes are not fetched twice (bounded: an upstream
                # answering past the Range asked for would loop).
                self._redone += 1
                body.release()
                continue
            return body
        return None

    async def receive(self, body: BlobBody, skip: int) -> bool:
        fill = self._fill
        os.lseek(self._fd, fill.front, os.SEEK_SET)  # the pump writes at the descriptor's offset
        cut = await self._pump(
            body, lambda: fill.front, self._fd, self._hasher.update, fill.wrote, skip, fill.cutting()
        )
        if fill.size is None:
            self._ended = True
            return True
        return cut or fill.front >= (fill.main_end or fill.size)

    async def _reopen(self) -> BlobBody:
        """A main stream body from the front, up to the next bytes present or being fetched."""
        fill = self._fill
        taken = fill.next_taken(fill.front)
        end = taken if taken is not None and fill.size is not None and taken < fill.size else None
        body = await self._upstream.open_blob(fill.name, fill.digest, offset=fill.front, end=end)
        answered = fields.content_range(body.headers.get("Content-Range")) if body.status == 206 else None
        fill.main_end = answered[1] if answered is not None else fill.size
        return body

    async def _absorb(self) -> None:
        """Hash, in order and from the file, bytes side streams put at the front (a step per thread
        hand-off, so that a cancelled fill stops within one)."""
        fill = self._fill
        while (end := fill.present.run_from(fill.front)) > fill.front:
            stop = min(end, fill.front + HASH_STEP)
            hashed = await asyncio.to_thread(
                self._buffers.hash_range, self._fd, self._hasher, fill.front, stop
            )
            if hashed != stop - fill.front:
                raise OSError(errno.EIO, "temp file shorter than its present bytes")
            fill.front += hashed


def _overlaps(fill: Fill) -> bool:
    """Whether an active side stream's window starts inside the main stream's body ahead."""
    end = fill.main_end if fill.main_end is not None else fill.size
    return any(w.active and fill.front < w.start and (end is None or w.start < end) for w in fill.windows)
