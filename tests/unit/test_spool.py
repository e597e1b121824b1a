"""The fill's batch writer: every chunk reaches the file in order, whatever `writev` accepts per call."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from mirror import fills


def chunks(count: int) -> list[bytes]:
    return [bytes([n % 251]) * (n % 7 + 1) for n in range(count)]


def write(path: Path, data: list[bytes]) -> bytes:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        fills._write_all(fd, data)
    finally:
        os.close(fd)
    return path.read_bytes()


def test_more_chunks_than_one_writev_takes_are_all_written_in_order(tmp_path: Path) -> None:
    data = chunks(3 * fills.IOV_MAX + 5)
    assert write(tmp_path / "f", data) == b"".join(data)


def test_short_writes_resume_inside_a_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `writev` that stops mid-chunk (as a nearly full disk does) is continued from that byte."""
    real = os.writev
    calls = 0

    def short_writev(fd: int, buffers: list[bytes]) -> int:
        nonlocal calls
        calls += 1
        return real(fd, [b"".join(bytes(b) for b in buffers)[:5]])

    monkeypatch.setattr(os, "writev", short_writev)
    data = chunks(40)
    assert write(tmp_path / "f", data) == b"".join(data)
    assert calls == -(-sum(map(len, data)) // 5)


async def test_cancelled_flush_still_waits_for_the_batch_in_flight(tmp_path: Path) -> None:
    """Cancelling (even twice) a flush whose batch is still being hashed returns only once that thread
    is done: the fill closes the file right after, and no thread may still be using it."""
    gate = threading.Event()
    hashed: list[int] = []

    def slow_hash(chunk: bytes) -> None:
        gate.wait(10)
        hashed.append(len(chunk))

    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        spool = fills._Spool(fd, slow_hash, lambda count: None)
        await spool.put(b"x" * 10)
        flushing = asyncio.create_task(spool.flush())
        for _ in range(2):
            await asyncio.sleep(0)
            flushing.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not flushing.done()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await flushing
        assert hashed == [10]
    finally:
        gate.set()
        os.close(fd)
