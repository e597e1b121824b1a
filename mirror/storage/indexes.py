"""Opening the SQLite indexes (blobs, manifests) so that a damaged one never stops the mirror.

An overwritten `cache.db` makes diskcache raise at open; a truncated one may open and fail only at
the first query that reads a lost page, so its length is checked against its header first. Then the
index file is moved aside (`cache.db.damaged-<unix time>`, kept for a post-mortem) and the index is
started empty: the blob files it indexed become orphans that the start-up check removes, and what they
held is fetched again. A crash loop in a pod is worse than a cold cache.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

log = structlog.get_logger("mirror.storage")

T = TypeVar("T")
INDEX_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")


def open_index(directory: Path, opener: Callable[[], T]) -> T:
    """`opener()`, or, when the index in `directory` is damaged, `opener()` again on an empty index.
    Blocking: call it in a thread."""
    try:
        check_length(directory / INDEX_FILES[0])
        return opener()
    except sqlite3.DatabaseError as exc:
        moved = move_aside(directory)
        log.exception("index_damaged", directory=str(directory), detail=str(exc), moved_to=moved)
        return opener()


def move_aside(directory: Path) -> str:
    """Rename the index files in `directory` out of the way; the new name of `cache.db`."""
    stamp = int(time.time())
    target = ""
    for name in INDEX_FILES:
        path = directory / name
        if path.exists():
            moved = path.with_name(f"{name}.damaged-{stamp}")
            path.rename(moved)
            target = target or str(moved)
    return target


def check_length(path: Path) -> None:
    """Raise `sqlite3.DatabaseError` if `path` is shorter than the page count in its own header says:
    a truncated index, which SQLite opens and queries happily until a query reaches a lost page.
    O(1): one `stat` and a 100-byte read. Skipped while a write-ahead log holds pages (SQLite then
    reads the newest pages from it, and a checkpoint interrupted by a crash may legitimately leave the
    file short until the log is replayed) and for headers too old to carry a valid page count."""
    wal = path.with_name(INDEX_FILES[1])
    if not path.exists() or (wal.exists() and wal.stat().st_size > 0):
        return
    with path.open("rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return  # not SQLite at all: opening it raises
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages, changes, valid_for = (int.from_bytes(header[i : i + 4], "big") for i in (28, 24, 92))
    if pages and changes == valid_for and os.stat(path).st_size < pages * page_size:
        raise sqlite3.DatabaseError(f"{path.name} is shorter than the {pages} pages its header counts")
