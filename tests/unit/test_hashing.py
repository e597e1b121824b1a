"""Hashing a byte range of a file: exactly the bytes asked for, to the file's end when no end is given,
fewer where the file ends first, and one buffer per thread, reused."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.storage.hashing import ReadBuffers, hash_range

DATA = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def test_a_range_is_hashed_exactly_through_a_smaller_buffer(fd: int) -> None:
    """Bytes [start, end) are hashed, whatever the buffer's size, and their count returned."""
    hasher = hashlib.sha256()
    assert hash_range(fd, hasher, 1000, 9001, bytearray(333)) == 8001
    assert hasher.hexdigest() == hashlib.sha256(DATA[1000:9001]).hexdigest()


def test_no_end_hashes_to_the_file_end(fd: int) -> None:
    """With no end, everything from `start` to the file's end is hashed."""
    hasher = hashlib.sha256()
    assert hash_range(fd, hasher, 7, None, bytearray(4096)) == len(DATA) - 7
    assert hasher.hexdigest() == hashlib.sha256(DATA[7:]).hexdigest()


def test_a_range_past_the_file_end_is_hashed_short_and_says_so(fd: int) -> None:
    """A range beyond the file's end hashes what is there and returns that count, fewer than asked."""
    hasher = hashlib.sha256()
    assert hash_range(fd, hasher, 10_000, 20_000, bytearray(1024)) == len(DATA) - 10_000
    assert hasher.hexdigest() == hashlib.sha256(DATA[10_000:]).hexdigest()


def test_each_thread_hashes_into_its_own_buffer_reused_for_every_range(fd: int) -> None:
    """A thread gets one buffer for all its ranges; another thread gets another."""
    buffers = ReadBuffers(size=512)
    seen: list[int] = []

    def hash_twice() -> None:
        for _ in range(2):
            buffers.hash_range(fd, hashlib.sha256(), 0, None)
            seen.append(id(buffers._buffer()))

    hash_twice()
    other = threading.Thread(target=hash_twice)
    other.start()
    other.join()
    assert seen[0] == seen[1] != seen[2] == seen[3]
