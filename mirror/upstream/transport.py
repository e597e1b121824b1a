"""The seam between the upstream client and the ways it reaches a registry.

A `Transport` sends one request and returns a `Response` whose headers are read. Two implement it: the
aiohttp session (`session.py`) for manifests, tokens and tag lists, and blocking connections in transfer
threads (`threaded.py`) for blob bodies, whose response is also a `BlobBody`. A `BlobSource` is whatever
can open a blob body by digest (the upstream client today; a peer replica could be another): fills
depend on that protocol and on nothing of how bytes travel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from multidict import CIMultiDictProxy
from yarl import URL


class TransportError(Exception):
    """The request could not be sent or its answer not read; `timeout` when a deadline ran out."""

    def __init__(self, detail: str, *, timeout: bool = False) -> None:
        super().__init__(detail)
        self.timeout = timeout


class BodyBroken(Exception):
    """The connection failed while a blob body was being received (time-out, reset, cut short)."""


class Response(Protocol):
    """An upstream answer whose status and headers are read."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content_length(self) -> int | None:
        """The announced body length; None when it is not known (chunked, absent)."""

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body (fewer only at its end); raises TransportError."""

    def release(self) -> None:
        """Give the connection back (or close it); the body is not read any further."""


R_co = TypeVar("R_co", bound=Response, covariant=True)


class Transport(Protocol[R_co]):
    """Sends requests to any origin; raises TransportError when no answer could be had."""

    async def send(self, method: str, url: URL, headers: Mapping[str, str]) -> R_co: ...

    async def close(self) -> None: ...


#: Called with the count of bytes each step wrote (on the event loop).
OnBytes = Callable[[int], None]
#: Fed every byte written, in order (from any thread: hashlib releases the GIL).
HashUpdate = Callable[[memoryview], object]


class BlobBody(Response, Protocol):
    """A blob response (200, or 206 for a Range) whose body is received into a file descriptor, or
    was read whole along with its headers (a small one)."""

    def take_whole(self) -> bytes | None:
        """The whole body if it came with the headers (then nothing is left to receive), else None."""

    async def pump_into(self, fd: int, hash_update: HashUpdate, on_bytes: OnBytes, skip: int = 0) -> None:
        """Receive the body into `fd` (in order, at the descriptor's current offset: a fill's side
        streams rely on it) after dropping its first `skip` bytes, hashing it, until its end or the
        connection's. Raises BodyBroken when the connection fails and OSError when writing fails.
        Cancelling it stops the receive and returns only once nothing touches `fd` any more, every
        byte written (and hashed) reported to `on_bytes`: a cut main stream is re-opened after them."""


class BlobSource(Protocol):
    """Where a fill gets a blob's bytes from."""

    @property
    def label(self) -> str:
        """The `upstream` label of metrics and logs."""

    async def open_blob(self, name: str, digest: str, offset: int = 0, end: int | None = None) -> BlobBody:
        """The blob's body from `offset` (to `end`, exclusive, when given) with its headers read; raises
        the registry error for a refusal. A source may answer with more than was asked (200, or a
        range to the end): the caller checks the status and `Content-Range`."""


def skip_for(body: BlobBody, offset: int) -> int:
    """Bytes to drop from a body asked from `offset`: all of them when the upstream ignored the Range
    and answered the whole blob (200)."""
    return offset if offset and body.status == 200 else 0


def unhashed(data: memoryview) -> None:
    """A `HashUpdate` that hashes nothing: for bytes hashed elsewhere (a fill's side stream, whose bytes
    the main stream hashes in order from the file) or never checked (a ranged pass-through)."""


def byte_range(offset: int, end: int | None) -> str:
    """The `Range` header value for bytes [offset, end) (to the blob's end when `end` is None)."""
    return f"bytes={offset}-" if end is None else f"bytes={offset}-{end - 1}"


class CountedBody:
    """A blob body whose received bytes are also counted, by the source that opened it (an upstream's
    `mirror_upstream_bytes_received_total`, or the peers' counter), so a fill mixing sources counts each
    byte where it came from."""

    def __init__(self, body: BlobBody, count: OnBytes) -> None:
        self._body = body
        self._count = count

    @property
    def status(self) -> int:
        return self._body.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._body.headers

    @property
    def content_length(self) -> int | None:
        return self._body.content_length

    async def read(self, limit: int) -> bytes:
        return await self._body.read(limit)

    def take_whole(self) -> bytes | None:
        whole = self._body.take_whole()
        if whole is not None:
            self._count(len(whole))
        return whole

    def release(self) -> None:
        self._body.release()

    async def pump_into(self, fd: int, hash_update: HashUpdate, on_bytes: OnBytes, skip: int = 0) -> None:
        def counted(count: int) -> None:
            self._count(count)
            on_bytes(count)

        await self._body.pump_into(fd, hash_update, counted, skip)
