"""The one place that knows how the cache's disk and index fail: as `StorageUnavailable`.

Storage methods on the request path are wrapped, so an `OSError` from the disk or a `sqlite3.Error` from
diskcache's index reaches the proxy and the handlers as a registry error (503), logged once here with
its traceback; nothing above storage knows the storage engine.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import structlog

from mirror import errors

log = structlog.get_logger("mirror.storage")

P = ParamSpec("P")
T = TypeVar("T")


def translated(func: Callable[P, T]) -> Callable[P, T]:
    """`func` with disk and index failures raised as `StorageUnavailable`."""

    @functools.wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except (OSError, sqlite3.Error) as exc:
            log.error("storage_error", operation=func.__qualname__, exc_info=True)
            raise errors.StorageUnavailable(f"cache storage failed: {type(exc).__name__}") from exc

    return call
