"""Fills: one upstream download per blob digest, read live by every client that wants that blob.

The first miss for a digest starts a fill: a task that streams the upstream body into a temp file while
hashing it. Clients read the growing file (never per-client queues, so memory stays bounded whatever
their number), waiting for bytes not written yet. The fill runs on its own: a client that disconnects
does not stop it. It resumes a broken upstream body with Range, and commits the file into the store
only when size and digest match; otherwise every reader is failed and nothing is kept. A fill reserves
its blob's size in the cache when the headers come (`storage/room.py`); a blob that gets no room, or
whose temp file cannot be written (disk full), is not stored: the fill ends `unstored` and its readers
go on from upstream (`passthrough.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from mirror import errors, oci
from mirror.metrics import Metrics
from mirror.storage.blobs import BlobStore
from mirror.storage.room import Refused, Reservation, Room, reason_of_os_error
from mirror.upstream.transport import BlobBody, BlobSource, BodyBroken

MAX_RESUMES = 5
RESUME_BACKOFF = 0.2
ABANDONED = "download stopped: its readers left and the abandoned-download budget is spent"


@dataclass(frozen=True, slots=True)
class FillLimits:
    """Bounds every fill keeps (settings of the same names; the README says why these defaults)."""

    min_bytes: int = 64 * 1024  # fewer than this in `min_window` seconds: the body is broken (resumed)
    min_window: float = 30.0
    max_seconds: float = 6 * 3600.0  # a whole fill, headers to commit
    abandoned: int = 8  # fills without readers allowed to run on
    abandoned_bytes: int = 2 * 1024**3  # bytes those may still download, together


log = structlog.get_logger("mirror.fills")


class FillFailed(Exception):
    """The fill a reader follows ended without a verified blob: the reader must abort its client."""


class Fill:
    """One download of one blob into a temp file, and the state its readers follow."""

    def __init__(self, digest: str, name: str) -> None:
        self.digest = digest
        self.name = name
        self.size: int | None = None
        self.written = 0
        self.error: errors.RegistryError | None = None
        self.finished = False
        self.verified = False  # size and digest matched: every byte may go out, before the commit
        self.unstored: str | None = None  # why the blob cannot be stored: readers go on from upstream
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fd: int | None = None
        self._readers = 0
        self.abandoned = False  # every reader left while it ran
        self.on_abandoned: Callable[[Fill], None] = lambda fill: None

    # -- reader side --------------------------------------------------------------------------

    def acquire(self) -> None:
        self._readers += 1
        self.abandoned = False

    def release(self) -> None:
        self._readers -= 1
        if self._readers <= 0 and not self.finished:
            self.abandoned = True
            self.on_abandoned(self)
        self._close_if_unused()

    @property
    def remaining(self) -> int | None:
        """Bytes still to download, None when the size is not known."""
        return None if self.size is None else max(0, self.size - self.written)

    def reader_file(self) -> IO[bytes]:
        """A file object over the temp file for `sendfile`/`pread` at explicit offsets; valid while the
        reader holds the fill (acquire/release). Closing it leaves the fill's descriptor open."""
        assert self._fd is not None, "reader_file() on a fill that has no file"
        return open(self._fd, "rb", buffering=0, closefd=False)  # closed by the reader

    def _releasable(self) -> int:
        """Bytes readers may have: all that is written, except that the last byte of a blob of known
        size is held back until the digest is verified, so no client ever receives the whole body of
        a blob that turns out corrupt (its connection is cut one byte short instead)."""
        if self.verified or self.finished or self.size is None:
            return self.written
        return min(self.written, self.size - 1)

    async def available(self, pos: int) -> int:
        """Wait until bytes past `pos` may be sent (or the fill ended); how many bytes may be sent.

        Raises FillFailed if the fill failed: what a reader already sent must then be cut off. A fill
        that ended `unstored` lets its readers have what it wrote: they take the rest from upstream."""
        while self._releasable() <= pos and not self.finished:
            await asyncio.shield(self._changed)
        # A failed commit leaves the bytes good.
        if self.error is not None and not self.verified and self.unstored is None:
            raise FillFailed(str(self.error))
        return self._releasable()

    # -- writer side --------------------------------------------------------------------------

    def answered(self, size: int | None) -> None:
        """The source answered with the blob's headers: readers may send theirs."""
        self.size = size
        self.ready.set()

    def attach(self, fd: int) -> None:
        """The temp file the bytes go to; closed once the fill ended and no reader holds it."""
        self._fd = fd

    def wrote(self, count: int) -> None:
        """`count` more bytes are in the file."""
        self.written += count
        self._notify()

    def verify(self) -> None:
        """Size and digest matched: every byte may go out, before the commit."""
        self.verified = True
        self._notify()

    def finish(self, error: errors.RegistryError | None) -> None:
        """The fill ended: committed (`error` None) or failed; readers see it at once."""
        self.error = error
        self.finished = True
        self.ready.set()
        self.done.set()
        self._notify()
        self._close_if_unused()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)

    def _close_if_unused(self) -> None:
        if self.finished and self._readers <= 0 and self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Fills:
    """The fills under way, by digest; every fill task is tracked and cancelled on `close()`."""

    def __init__(
        self,
        store: BlobStore,
        metrics: Metrics,
        on_commit: Callable[[str, int], None] = lambda digest, size: None,
        limits: FillLimits = FillLimits(),
        room: Room | None = None,
    ) -> None:
        self._store = store
        self._room = room  # reservations against the cache's limit and free space (None: none made)
        self._metrics = metrics
        self._on_commit = on_commit
        self._limits = limits
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_fill: dict[Fill, asyncio.Task[None]] = {}
        self._stopped: set[Fill] = set()  # stopped on purpose (abandoned past the budget)

    def get(self, digest: str) -> Fill | None:
        return self._fills.get(digest)

    def start(self, upstream: BlobSource, name: str, digest: str) -> Fill:
        """The fill for `digest`, started now unless one is under way (no reader is attached)."""
        fill = self._fills.get(digest)
        if fill is None:
            fill = Fill(digest, name)
            self._fills[digest] = fill
            task = asyncio.create_task(self._run(upstream, fill), name=f"fill {digest}")
            self._tasks.add(task)
            self._by_fill[fill] = task
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: self._by_fill.pop(fill, None))
            fill.on_abandoned = self._abandoned
        return fill

    def _abandoned(self, fill: Fill) -> None:
        """Every reader of `fill` left: it runs on only within the abandoned-fill budget (count and bytes
        still to download, over all such fills), else it is stopped: a few kilobytes of requests must
        never make the mirror download gigabytes. A fill with every byte downloaded (its last reader
        often leaves while the commit runs) costs nothing more: it is never stopped, nor counted."""
        if fill.remaining != 0 and self._over_budget(fill):
            task = self._by_fill.get(fill)
            if task is not None and not task.done():
                self._stopped.add(fill)
                task.cancel()

    def _over_budget(self, fill: Fill) -> bool:
        others = [
            f
            for f in self._fills.values()
            if f.abandoned and f is not fill and f not in self._stopped and f.remaining != 0
        ]
        # Before its headers a fill's size is not known: it is judged again when they come.
        left = [f.remaining for f in (*others, fill) if f.ready.is_set()]
        unknown = any(r is None for r in left)
        total = sum(r for r in left if r is not None)
        within = len(others) + 1 <= self._limits.abandoned and total <= self._limits.abandoned_bytes
        return unknown or not within

    async def join(self, upstream: BlobSource, name: str, digest: str) -> tuple[Fill, bool]:
        """The fill for `digest` with its headers known, started if none is under way, acquired for reading.

        Returns (fill, joined). Raises the upstream's registry error if the fill failed before headers.
        """
        fill = self._fills.get(digest)
        joined = fill is not None
        if fill is None:
            fill = self.start(upstream, name, digest)
        else:
            self._metrics.fill_readers.inc()
        fill.acquire()
        try:
            await fill.ready.wait()
        except BaseException:  # the client left before the headers: it is no reader any more
            fill.release()
            raise
        if fill.error is not None and fill.size is None and fill.unstored is None:
            fill.release()
            raise fill.error
        return fill, joined

    async def _run(self, upstream: BlobSource, fill: Fill) -> None:
        self._metrics.fills_in_flight.inc()
        started = time.monotonic()
        file: IO[bytes] | None = None
        temp: Path | None = None
        reservation: Reservation | None = None
        deadline = asyncio.timeout(self._limits.max_seconds)
        try:
            async with deadline:
                # Ask upstream first: clients get their headers as soon as it answers, while the temp
                # file is being set up (they read nothing before the first bytes are written anyway).
                resp = await upstream.open_blob(fill.name, fill.digest)
                fill.answered(resp.content_length)
                if fill.abandoned and self._over_budget(fill):  # every reader left before the headers
                    resp.release()
                    self._fail(fill, errors.UpstreamUnavailable(ABANDONED), "abandoned")
                    return
                room = await self._reserve(fill)
                if isinstance(room, Refused):
                    resp.release()
                    self._not_stored(fill, room)
                    return
                reservation = room
                try:
                    opened, path, fd = await self._open_temp(fill.digest)
                except BaseException:
                    resp.release()
                    raise
                fill.attach(fd)
                file, temp = opened, path
                await self._download(upstream, fill, opened, resp)
                await asyncio.to_thread(self._commit, opened, reservation, fill.digest, path, fill.written)
                temp, reservation = None, None  # the commit released the reservation with it
                self._on_commit(fill.digest, fill.written)
                log.info(
                    "blob_fill_committed",
                    digest=fill.digest,
                    bytes=fill.written,
                    seconds=round(time.monotonic() - started, 3),
                )
                fill.finish(None)
        except errors.RegistryError as exc:
            if isinstance(exc, errors.StorageUnavailable) and fill.ready.is_set() and not fill.verified:
                self._not_stored(fill, _refusal(exc))  # the temp file could not be made
            elif fill.ready.is_set():
                self._fail(fill, exc, reason_of(exc))
            else:  # the upstream refused (404, 401, ...): an answer, not a failed download
                fill.finish(exc)
        except asyncio.CancelledError:
            if fill in self._stopped:  # stopped on purpose: the task ends here, quietly
                self._fail(fill, errors.UpstreamUnavailable(ABANDONED), "abandoned")
                return
            self._fail(fill, errors.UpstreamUnavailable("the mirror is shutting down"), "shutdown")
            raise
        except TimeoutError:
            if not deadline.expired():
                raise
            detail = f"download took longer than fill_max_seconds ({self._limits.max_seconds:g} s)"
            self._fail(fill, errors.UpstreamUnavailable(detail), "upstream_error")
        except OSError as exc:  # writing the temp file (in the transfer thread), or committing it
            detail = f"cache write failed: {exc.strerror}"
            if fill.verified:  # the readers have every byte: only the cache entry is lost
                self._fail(fill, errors.StorageUnavailable(detail), "disk")
            else:
                self._not_stored(fill, Refused(reason_of_os_error(exc), detail))
        except Exception as exc:  # a bug or a surprise: every reader still gets an answer, and we hear of it
            log.exception("blob_fill_crashed", digest=fill.digest, bytes=fill.written)
            self._fail(fill, errors.UpstreamUnavailable(f"download failed: {type(exc).__name__}"), "internal")
        finally:
            # Out of the table before any await: a finished fill has closed its file, so a request
            # that joined it now would find none (it reads the store, or starts a new fill).
            self._stopped.discard(fill)
            self._fills.pop(fill.digest, None)
            self._metrics.fills_in_flight.dec()
            if reservation is not None:  # the fill failed: its bytes are no longer reserved
                await asyncio.to_thread(reservation.release)
            if file is not None and not file.closed:
                await asyncio.to_thread(file.close)
            if temp is not None:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.unlink, temp)

    async def _open_temp(self, digest: str) -> tuple[IO[bytes], Path, int]:
        """`BlobStore.open_temp` in a thread; if this is cancelled meanwhile, what the thread opened is
        closed and removed once it is done, so no descriptor or file is left behind."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._store.open_temp, digest))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.wait({opening})
            if not opening.cancelled() and opening.exception() is None:
                file, path, fd = opening.result()
                await asyncio.to_thread(_discard_temp, file, path, fd)
            raise

    async def _reserve(self, fill: Fill) -> Reservation | Refused | None:
        """Room for the blob in the cache (None: no room is kept, or its size is not known)."""
        if self._room is None or fill.size is None:
            return None
        return await self._room.reserve(fill.digest, fill.size, lambda: fill.written)

    def _commit(
        self, file: IO[bytes], reservation: Reservation | None, digest: str, temp: Path, size: int
    ) -> None:
        """Close the verified temp file and adopt it into the store (blocking): one thread hop for both."""
        file.close()
        if self._room is not None:
            self._room.commit(reservation, digest, temp, size)
        else:
            self._store.commit(digest, temp, size)

    def _not_stored(self, fill: Fill, refused: Refused) -> None:
        """The blob cannot be stored: the fill ends `unstored`, its readers go on from upstream."""
        log.warning(
            "blob_not_stored",
            digest=fill.digest,
            reason=refused.reason,
            detail=refused.detail,
            size=fill.size,
            bytes=fill.written,
        )
        if self._room is not None:
            self._room.refuse(fill.digest, fill.size, refused.reason)
        fill.unstored = refused.reason
        fill.finish(errors.StorageUnavailable(f"blob not stored: {refused.detail}"))

    def _fail(self, fill: Fill, exc: errors.RegistryError, reason: str) -> None:
        self._metrics.fill_failures.labels(reason).inc()
        log.warning(
            "blob_fill_failed", digest=fill.digest, reason=reason, detail=str(exc), bytes=fill.written
        )
        fill.finish(exc)

    async def _download(self, upstream: BlobSource, fill: Fill, file: IO[bytes], resp: BlobBody) -> None:
        """Stream the upstream body into `file`, resuming with Range; raise unless size and digest match."""
        hasher = oci.Digest.parse(fill.digest).hasher()
        written = fill.wrote  # the source counts its own bytes (upstream's, or a peer's)
        resumes = 0
        while True:
            try:
                try:
                    await self._pump(resp, fill, file.fileno(), hasher.update, written)
                finally:
                    resp.release()
            except BodyBroken as exc:
                problem = str(exc)
            else:
                if fill.size is None or fill.written >= fill.size:
                    break
                problem = "upstream body ended early"
            resumes += 1
            if resumes > MAX_RESUMES:
                raise errors.UpstreamUnavailable(f"blob download failed: {problem}")
            log.info("blob_fill_resumed", digest=fill.digest, offset=fill.written, detail=problem)
            self._metrics.fill_resumes.inc()
            await asyncio.sleep(RESUME_BACKOFF * 2 ** (resumes - 1))
            resp = await upstream.open_blob(fill.name, fill.digest, offset=fill.written)
        if fill.size is not None and fill.written != fill.size:
            raise SizeMismatch(f"upstream sent {fill.written} bytes, announced {fill.size}")
        if hasher.hexdigest() != oci.Digest.parse(fill.digest).hex:
            raise DigestMismatch(f"upstream bytes do not hash to {fill.digest}")
        # Readers need not wait for the file to be closed and committed: the bytes are right.
        fill.verify()

    async def _pump(
        self,
        resp: BlobBody,
        fill: Fill,
        fd: int,
        hash_update: Callable[[memoryview], object],
        on_bytes: Callable[[int], None],
    ) -> None:
        """`pump_into`, ended as a broken body (so resumed, at most MAX_RESUMES times) whenever fewer
        than `min_bytes` arrive in `min_window` seconds: a drip never holds a fill for ever."""
        pump = asyncio.ensure_future(resp.pump_into(fd, hash_update, on_bytes, _skip_for(resp, fill.written)))
        try:
            while True:
                mark = fill.written
                done, _ = await asyncio.wait({pump}, timeout=self._limits.min_window)
                if done:
                    return pump.result()
                got = fill.written - mark
                if got < self._limits.min_bytes:
                    raise BodyBroken(
                        f"upstream sent {got} bytes in {self._limits.min_window:g} s "
                        f"(fewer than fill_min_bytes, {self._limits.min_bytes})"
                    )
        finally:
            if not pump.done():
                pump.cancel()
                await asyncio.wait({pump})  # the pump is stopped and done with `fd`

    async def close(self, grace: float = 0.0) -> None:
        """Let fills under way finish for up to `grace` seconds, then cancel the rest and wait for them.

        A cancelled fill deletes its temp file: nothing half-written is ever committed.
        """
        tasks = list(self._tasks)
        if tasks and grace > 0:
            log.info("blob_fills_draining", fills=len(tasks), grace=grace)
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class DigestMismatch(errors.UpstreamBadGateway):
    """The upstream's bytes do not hash to the digest asked for."""


class SizeMismatch(errors.UpstreamBadGateway):
    """The upstream sent more or fewer bytes than it announced."""


def reason_of(exc: errors.RegistryError) -> str:
    """The `reason` label of a failed fill."""
    if isinstance(exc, DigestMismatch):
        return "digest_mismatch"
    if isinstance(exc, SizeMismatch):
        return "size_mismatch"
    if isinstance(exc, errors.StorageUnavailable):
        return "disk"
    return "upstream_error"


def _skip_for(resp: BlobBody, written: int) -> int:
    """Bytes to drop from a resumed response: all we have when the upstream ignored our Range."""
    return written if written and resp.status == 200 else 0


def _discard_temp(file: IO[bytes], path: Path, fd: int) -> None:
    file.close()
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


def _refusal(exc: errors.StorageUnavailable) -> Refused:
    """Why a storage failure (translated from an OSError) keeps a blob from being stored."""
    cause = exc.__cause__
    reason = reason_of_os_error(cause) if isinstance(cause, OSError) else "disk_error"
    return Refused(reason, str(exc))
