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

from mirror import errors, oci, wholefill
from mirror.extents import Extents, Window
from mirror.mainstream import MainStream
from mirror.metrics import Metrics
from mirror.resumes import receive_resuming
from mirror.sidestreams import SideStreams
from mirror.storage.blobs import BlobStore
from mirror.storage.hashing import ReadBuffers
from mirror.storage.room import Refused, Reservation, Room, reason_of_os_error
from mirror.upstream.transport import BlobBody, BlobSource, BodyBroken

ABANDONED = "download stopped: its readers left and the abandoned-download budget is spent"


@dataclass(frozen=True, slots=True)
class FillLimits:
    """Bounds every fill keeps (settings of the same names; the README says why these defaults)."""

    min_bytes: int = 64 * 1024  # fewer than this in `min_window` seconds: the body is broken (resumed)
    min_window: float = 30.0
    max_seconds: float = 6 * 3600.0  # a whole fill, headers to commit
    abandoned: int = 8  # fills without readers allowed to run on
    abandoned_bytes: int = 2 * 1024**3  # bytes those may still download, together
    range_streams: int = 2  # ranged side streams per fill, for readers far ahead of its front
    range_streams_total: int = 16  # side streams of all fills together
    range_gap: int = 16 * 1024**2  # how far ahead of the front a reader must be to get one


log = structlog.get_logger("mirror.fills")


class FillFailed(Exception):
    """The fill a reader follows ended without a verified blob: the reader must abort its client."""


class Fill:
    """One download of one blob into a temp file, and the state its readers follow."""

    def __init__(self, digest: str, name: str) -> None:
        self.digest = digest
        self.name = name
        self.size: int | None = None
        self.present = Extents()  # bytes in the temp file, from the main stream and side streams
        self.front = 0  # the main stream's position: every byte before it is present and hashed, in order
        self.windows: list[Window] = []  # what side streams are fetching (see `sidestreams.py`)
        self.ranged = True  # side streams may be tried (until one is refused or fails)
        self.main_end: int | None = None  # where the main stream's current body ends (None: unknown)
        self.temp: Path | None = None  # the temp file's path, for side streams' own descriptors
        self.data: bytes | None = None  # the whole verified body, when it came with the headers
        self.attached = asyncio.Event()
        self._cut: asyncio.Future[None] | None = None  # set to stop the main stream's current body
        self.error: errors.RegistryError | None = None
        self.finished = False
        self.verified = False  # size and digest matched: every byte may go out, before the commit
        self.unstored: str | None = None  # why the blob cannot be stored: readers go on from upstream
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fd: int | None = None
        self._readers = 0
        self.joined = 0  # readers that ever acquired it
        self.abandoned = False  # every reader left while it ran
        self.on_abandoned: Callable[[Fill], None] = lambda fill: None
        #: A reader waits for bytes [pos, until) that are not there (set by `Fills`: a side stream?);
        #: the last argument is false when it asks again, after a side stream of this fill ended.
        self.on_wanted: Callable[[Fill, int, int | None, bool], None] = lambda fill, pos, until, first: None

    # -- reader side --------------------------------------------------------------------------

    def acquire(self) -> None:
        self._readers += 1
        self.joined += 1
        self.abandoned = False

    def release(self) -> None:
        self._readers -= 1
        if self._readers <= 0 and not self.finished:
            self.abandoned = True
            self.on_abandoned(self)
        self._close_if_unused()

    @property
    def written(self) -> int:
        """Bytes present from the blob's start on, without a gap."""
        return self.present.run_from(0)

    @property
    def remaining(self) -> int | None:
        """Bytes still to download, None when the size is not known."""
        return None if self.size is None else max(0, self.size - self.present.total)

    def reader_file(self) -> IO[bytes]:
        """A file object over the temp file for `sendfile`/`pread` at explicit offsets; valid while the
        reader holds the fill (acquire/release). Closing it leaves the fill's descriptor open."""
        assert self._fd is not None, "reader_file() on a fill that has no file"
        return open(self._fd, "rb", buffering=0, closefd=False)  # closed by the reader

    def _releasable(self, pos: int) -> int:
        """The end of the bytes from `pos` on readers may have: those present, except that the last
        byte of a blob of known size is held back until the digest is verified, so no client ever
        receives the whole body of a blob that turns out corrupt (its connection is cut one byte short
        instead)."""
        end = self.present.run_from(pos)
        if self.verified or self.finished or self.size is None:
            return end
        return min(end, self.size - 1)

    async def available(self, pos: int, until: int | None = None) -> int:
        """Wait until the byte at `pos` may be sent (or the fill ended); the end of the bytes from
        `pos` on that may be sent. `until`: where the reader stops (None: the blob's end).

        Raises FillFailed if the fill failed: what a reader already sent must then be cut off. A fill
        that ended `unstored` lets its readers have what it wrote: they take the rest from upstream."""
        asked: int | None = None  # side streams of this fill when the reader last asked for one
        while self._releasable(pos) <= pos and not self.finished:
            if asked is None or len(self.windows) < asked:
                self.on_wanted(self, pos, until, asked is None)
                asked = len(self.windows)
            await asyncio.shield(self._changed)
        # A failed commit leaves the bytes good.
        if self.error is not None and not self.verified and self.unstored is None:
            raise FillFailed(str(self.error))
        return self._releasable(pos)

    # -- writer side --------------------------------------------------------------------------

    def answered(self, size: int | None) -> None:
        """The source answered with the blob's headers: readers may send theirs."""
        self.size = size
        self.ready.set()

    def keep(self, data: bytes) -> None:
        """The whole body came with the headers and is verified: readers send it from memory."""
        self.data = data
        self.present.add(0, len(data))
        self.front = len(data)
        self.verified = True
        self.answered(len(data))
        self._notify()

    def attach(self, fd: int) -> None:
        """The temp file the bytes go to; closed once the fill ended and no reader holds it."""
        self._fd = fd
        self.attached.set()

    def wrote(self, count: int) -> None:
        """`count` more bytes are in the file at the front (the main stream's, in order)."""
        self.present.add(self.front, self.front + count)
        self.front += count
        self._notify()

    # -- side streams (`sidestreams.py`) and the main stream between them ------------------------

    def window_at(self, pos: int) -> Window | None:
        """The side stream fetching the byte at `pos`, if any."""
        return next((w for w in self.windows if w.holds(pos)), None)

    def next_taken(self, pos: int) -> int | None:
        """The first offset after `pos` that is present or being fetched by a side stream."""
        found = [w.start for w in self.windows if w.start > pos]
        if (present := self.present.next_from(pos + 1)) is not None:
            found.append(present)
        return min(found, default=None)

    def side_wrote(self, window: Window, count: int) -> None:
        """`count` more bytes of `window` are in the file."""
        self.present.add(window.front, window.front + count)
        window.got += count
        self._notify()

    def activate(self, window: Window) -> None:
        """`window`'s bytes are coming: a main stream body that would fetch them again is cut."""
        window.active = True
        cut = self._cut
        ahead = self.main_end is None or self.main_end > window.start
        if cut is not None and not cut.done() and self.front < window.start and ahead:
            cut.set_result(None)

    def drop(self, window: Window) -> None:
        """`window`'s stream ended: what it wrote stays present, the rest is the main stream's again."""
        self.windows.remove(window)
        self._notify()

    def cutting(self) -> asyncio.Future[None]:
        """A future `activate` completes when the main stream's current body must stop."""
        self._cut = asyncio.get_running_loop().create_future()
        return self._cut

    async def changed(self) -> None:
        """Wait for the next change of the fill's state."""
        await asyncio.shield(self._changed)

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
        buffers: ReadBuffers | None = None,
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
        self._sides = SideStreams(limits, metrics, self._pump)
        self._buffers = buffers if buffers is not None else ReadBuffers()  # to hash side streams' bytes

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
            fill.on_wanted = lambda fill, pos, until, first: self._sides.wanted(
                upstream, fill, pos, until, first
            )
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
                if (whole := resp.take_whole()) is not None:  # a small body: no temp file to follow
                    try:
                        await self._keep_whole(fill, whole, started)
                    finally:
                        resp.release()
                    return
                fill.answered(resp.content_length)
                if fill.abandoned and self._over_budget(fill):  # every reader left before the headers
                    resp.release()
                    self._fail(fill, errors.UpstreamUnavailable(ABANDONED), "abandoned")
                    return
                # The temp file is made while the reservation is decided: two thread steps at once.
                opening = asyncio.ensure_future(self._open_temp(fill.digest))
                try:
                    room = await self._reserve(fill)
                except BaseException:
                    resp.release()
                    await _drop_temp(opening)
                    raise
                if isinstance(room, Refused):
                    resp.release()
                    await _drop_temp(opening)
                    self._not_stored(fill, room)
                    return
                reservation = room
                try:
                    opened, path, fd = await opening
                except BaseException:
                    resp.release()
                    await _drop_temp(opening)
                    raise
                fill.temp = path
                fill.attach(fd)
                file, temp = opened, path
                await self._download(upstream, fill, opened, resp)
                await self._sides.stop(fill)
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
            await self._sides.stop(fill)  # before the file is closed and removed
            if reservation is not None:  # the fill failed: its bytes are no longer reserved
                await asyncio.to_thread(reservation.release)
            self._metrics.fills_in_flight.dec()
            if file is not None and not file.closed:
                await asyncio.to_thread(file.close)
            if temp is not None:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.unlink, temp)

    async def _keep_whole(self, fill: Fill, data: bytes, started: float) -> None:
        """A body that came whole with its headers (`wholefill.py`): verified, then reserved (the
        serial decision every fill takes), written and committed in one thread step, and served from
        memory; served all the same when it cannot be stored. One that does not match is refused
        before any reader's headers."""
        if not await wholefill.matches(fill.digest, data):
            mismatch = DigestMismatch(f"upstream bytes do not hash to {fill.digest}")
            self._fail(fill, mismatch, "digest_mismatch")
            return
        room, store, adopt = self._room, self._store, self._adopt
        try:
            if room is None:
                await asyncio.to_thread(wholefill.store, store, adopt, None, fill.digest, data)
            else:  # the reservation, the write and the commit in one thread step
                held = await room.reserve(
                    fill.digest,
                    len(data),
                    lambda: 0,
                    lambda reservation: wholefill.store(store, adopt, reservation, fill.digest, data),
                )
                if isinstance(held, Refused):
                    fill.keep(data)
                    self._not_stored(fill, held)
                    return
        except (OSError, errors.StorageUnavailable) as exc:  # the reservation was given back
            cause = exc.__cause__ if isinstance(exc, errors.StorageUnavailable) else exc
            reason = reason_of_os_error(cause) if isinstance(cause, OSError) else "disk_error"
            fill.keep(data)
            self._not_stored(fill, Refused(reason, f"cache write failed: {cause}"))
            return
        fill.keep(data)
        self._on_commit(fill.digest, len(data))
        log.info(
            "blob_fill_committed",
            digest=fill.digest,
            bytes=len(data),
            seconds=round(time.monotonic() - started, 3),
            in_memory=True,
        )
        fill.finish(None)

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
        return await self._room.reserve(fill.digest, fill.size, lambda: fill.present.total)

    def _commit(
        self, file: IO[bytes], reservation: Reservation | None, digest: str, temp: Path, size: int
    ) -> None:
        """Close the verified temp file and adopt it into the store (blocking): one thread hop for both."""
        file.close()
        self._adopt(reservation, digest, temp, size)

    def _adopt(self, reservation: Reservation | None, digest: str, temp: Path, size: int) -> None:
        """Commit a verified temp file as `digest`: through the room, which releases `reservation` in
        the same step, when reservations are kept, else straight into the store (blocking)."""
        if self._room is not None:
            self._room.commit(reservation, digest, temp, size)
        else:
            self._store.commit(digest, temp, size)

    def _not_stored(self, fill: Fill, refused: Refused) -> None:
        """The blob cannot be stored: the fill ends not stored, and the next readers go straight to
        upstream. A streamed fill ends `unstored` (its readers go on from upstream, each counted as a
        pass-through there); the readers of a body kept whole in memory (`fill.data`) have every byte
        already, and are counted as pass-throughs here."""
        in_memory = fill.data is not None
        log.warning(
            "blob_not_stored",
            digest=fill.digest,
            reason=refused.reason,
            detail=refused.detail,
            size=fill.size,
            bytes=fill.size if in_memory else fill.written,
            in_memory=in_memory,
        )
        if self._room is not None:
            self._room.refuse(fill.digest, fill.size, refused.reason)
        if in_memory:
            self._metrics.blob_passthrough.labels(refused.reason).inc(fill.joined)
        else:
            fill.unstored = refused.reason
        fill.finish(errors.StorageUnavailable(f"blob not stored: {refused.detail}"))

    def _fail(self, fill: Fill, exc: errors.RegistryError, reason: str) -> None:
        self._metrics.fill_failures.labels(reason).inc()
        log.warning(
            "blob_fill_failed", digest=fill.digest, reason=reason, detail=str(exc), bytes=fill.written
        )
        fill.finish(exc)

    async def _download(self, upstream: BlobSource, fill: Fill, file: IO[bytes], resp: BlobBody) -> None:
        """Stream the upstream body into `file`, resuming with Range; raise unless size and digest match.

        The main stream hashes every byte in order. Where side streams put bytes ahead of it, it stops
        short of them (its body is cut and re-opened with a bounded Range), hashes them from the file
        as they arrive, and goes on after them: no byte is fetched twice on purpose."""
        hasher = oci.Digest.parse(fill.digest).hasher()
        fill.main_end = fill.size
        main = MainStream(upstream, fill, file.fileno(), hasher, resp, self._pump, self._buffers)
        await receive_resuming(
            main,
            log=log,
            event="blob_fill_resumed",
            digest=fill.digest,
            resumes=self._metrics.fill_resumes,
            give_up=errors.UpstreamUnavailable,
        )
        if fill.size is not None and fill.front != fill.size:
            raise SizeMismatch(f"upstream sent {fill.front} bytes, announced {fill.size}")
        if hasher.hexdigest() != oci.Digest.parse(fill.digest).hex:
            raise DigestMismatch(f"upstream bytes do not hash to {fill.digest}")
        # Readers need not wait for the file to be closed and committed: the bytes are right.
        fill.verify()

    async def _pump(
        self,
        resp: BlobBody,
        progress: Callable[[], int],
        fd: int,
        hash_update: Callable[[memoryview], object],
        on_bytes: Callable[[int], None],
        skip: int = 0,
        cut: asyncio.Future[None] | None = None,
    ) -> bool:
        """`pump_into`, ended as a broken body (so resumed, at most MAX_RESUMES times) whenever fewer
        than `min_bytes` arrive in `min_window` seconds (by `progress`): a drip never holds a fill for
        ever. Stopped early when `cut` completes; returns whether it was."""
        pump = asyncio.ensure_future(resp.pump_into(fd, hash_update, on_bytes, skip))
        waiting: set[asyncio.Future[None]] = {pump} if cut is None else {pump, cut}
        try:
            while True:
                mark = progress()
                done, _ = await asyncio.wait(
                    waiting, timeout=self._limits.min_window, return_when=asyncio.FIRST_COMPLETED
                )
                if pump in done:
                    pump.result()
                    return False
                if cut is not None and cut.done():
                    return True
                got = progress() - mark
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


async def _drop_temp(opening: asyncio.Future[tuple[IO[bytes], Path, int]]) -> None:
    """Stop `opening` (a `Fills._open_temp`) and remove what it made, if anything."""
    opening.cancel()  # `_open_temp` then waits for its thread and removes what it opened
    await asyncio.wait({opening})
    if not opening.cancelled() and opening.exception() is None:
        await asyncio.to_thread(_discard_temp, *opening.result())


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
