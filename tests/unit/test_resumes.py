"""The resume rule of an upstream blob body: a body that breaks off or ends early is asked again from
where it stopped, the bytes an upstream that ignored the Range sends again are dropped, each resume is
logged and counted, and past MAX_RESUMES the caller's error is raised."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry, Counter
from structlog.testing import capture_logs

from mirror import resumes
from mirror.upstream.transport import BlobBody, BodyBroken, HashUpdate, OnBytes

BLOB = bytes(range(256)) * 4  # 1,024 bytes


class Body:
    """An upstream answer, scripted: `data` (from the offset asked for, or the whole blob for a 200),
    then the end of the body or, with `breaks`, a broken connection."""

    def __init__(self, status: int, data: bytes, breaks: bool = False) -> None:
        self._status = status
        self._data = data
        self._breaks = breaks
        self.released = False

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(CIMultiDict())

    @property
    def content_length(self) -> int | None:
        return len(self._data)

    async def read(self, limit: int) -> bytes:
        raise AssertionError("a resumed download pumps its bodies")

    def release(self) -> None:
        self.released = True

    async def pump_into(self, fd: int, hash_update: HashUpdate, on_bytes: OnBytes, skip: int = 0) -> None:
        data = self._data[skip:]
        await asyncio.to_thread(os.write, fd, data)  # as a real pump does, off the event loop
        hash_update(memoryview(data))
        on_bytes(len(data))
        if self._breaks:
            raise BodyBroken("connection reset by peer")


class Download:
    """A download of BLOB into a file (`resumes.Resumable`), its bodies answered by `answer(offset)`."""

    def __init__(self, fd: int, answer: Callable[[int], Body]) -> None:
        self._fd = fd
        self._answer = answer
        self.offset = 0
        self.asked: list[int] = []
        self.bodies: list[Body] = []

    async def next_body(self) -> BlobBody | None:
        if self.offset >= len(BLOB):
            return None
        self.asked.append(self.offset)
        self.bodies.append(self._answer(self.offset))
        return self.bodies[-1]

    async def receive(self, body: BlobBody, skip: int) -> bool:
        await body.pump_into(self._fd, lambda data: None, self._count, skip)
        return self.offset >= len(BLOB)

    def _count(self, count: int) -> None:
        self.offset += count


@pytest.fixture
def blob_file(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    yield path, fd
    os.close(fd)


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resumes, "RESUME_BACKOFF", 0.0)


def counter() -> Counter:
    return Counter("resumes", "resumes", registry=CollectorRegistry())


def total(count: Counter) -> float:
    """The counter's value, as a scrape reads it."""
    (metric,) = count.collect()
    return next(float(s.value) for s in metric.samples if s.name == "resumes_total")


async def download(
    target: Download, count: Counter, give_up: Callable[[str], Exception] = BodyBroken
) -> None:
    await resumes.receive_resuming(
        target,
        log=structlog.get_logger("test"),
        event="blob_resumed",
        digest="sha256:x",
        resumes=count,
        give_up=give_up,
    )


async def test_a_broken_body_is_asked_again_from_where_it_stopped(blob_file: tuple[Path, int]) -> None:
    """Bodies that break after 300 bytes are resumed at 300 and 600; the blob arrives whole, every
    body released, each resume counted."""
    path, fd = blob_file
    count = counter()
    target = Download(
        fd,
        lambda offset: (
            Body(206, BLOB[offset : offset + 300], True) if offset < 600 else Body(206, BLOB[offset:])
        ),
    )
    await download(target, count)
    assert target.asked == [0, 300, 600]
    assert await asyncio.to_thread(path.read_bytes) == BLOB
    assert all(body.released for body in target.bodies)
    assert total(count) == 2


async def test_bytes_before_the_offset_are_dropped_when_the_upstream_ignored_the_range(
    blob_file: tuple[Path, int],
) -> None:
    """A resume answered 200 with the whole blob has its first `offset` bytes dropped (`skip_for`)."""
    path, fd = blob_file
    target = Download(fd, lambda offset: Body(200, BLOB if offset else BLOB[:100], breaks=not offset))
    await download(target, counter())
    assert target.asked == [0, 100]
    assert await asyncio.to_thread(path.read_bytes) == BLOB


async def test_a_body_that_ends_early_is_resumed_and_logged(blob_file: tuple[Path, int]) -> None:
    """A body that ends before the blob's end is resumed like a broken one, logged with its offset."""
    _, fd = blob_file
    target = Download(fd, lambda offset: Body(206, BLOB[offset : offset + 700]))
    with capture_logs() as logs:
        await download(target, counter())
    assert target.asked == [0, 700]
    resumed = [entry for entry in logs if entry["event"] == "blob_resumed"]
    assert resumed == [
        {
            "event": "blob_resumed",
            "log_level": "info",
            "digest": "sha256:x",
            "offset": 700,
            "detail": "upstream body ended early",
        }
    ]


async def test_past_max_resumes_the_callers_error_is_raised(blob_file: tuple[Path, int]) -> None:
    """A body that always breaks is opened 1 + MAX_RESUMES times, then the caller's error is raised."""
    _, fd = blob_file
    count = counter()
    target = Download(fd, lambda offset: Body(206, b"", breaks=True))
    with pytest.raises(LookupError, match="blob download failed: connection reset by peer"):
        await download(target, count, give_up=LookupError)
    assert len(target.asked) == 1 + resumes.MAX_RESUMES
    assert all(body.released for body in target.bodies)
    assert total(count) == resumes.MAX_RESUMES
