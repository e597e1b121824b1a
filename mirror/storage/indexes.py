"""Opening the SQLite indexes (blobs, manifests) so that a damaged one never stops the mirror.

A truncated or overwritten `cache.db` makes diskcache raise at open or at the first query; then the
index file is moved aside (`cache.db.damaged-<unix time>`, kept for a post-mortem) and the index is
started empty: the blob files it indexed become orphans that the start-up check removes, and what they
held is fetched again. A crash loop in a pod is worse than a cold cache.
"""

from __future__ import annotations

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
