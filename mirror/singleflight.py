"""One in-flight call per key: concurrent callers of the same key share one result.

The shared call runs in its own task, so a caller that goes away (a client disconnecting) does not
cancel it for the others. Every task is tracked and cancelled by `close()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Coalesces concurrent `run(key, call)` into one `call()` per key."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The result of the one call for `key`, and whether this caller joined an existing one."""
        task = self._flights.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(call())
            self._flights[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return await asyncio.shield(task), joined

    def _forget(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody awaited is not "never retrieved"

    def busy(self, key: Hashable) -> bool:
        """Whether a call for `key` is in flight."""
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    async def close(self) -> None:
        """Cancel the calls still in flight and wait for them to end."""
        tasks = list(self._flights.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
