"""Waiting for a condition by polling it (never by sleeping a fixed time): the one helper of each kind."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
#: Seconds between two polls: short, since every check here is cheap.
INTERVAL_S = 0.01


def poll(fetch: Callable[[], T], accept: Callable[[T], bool], deadline_s: float, what: str) -> T:
    """Call `fetch` until `accept` holds for its result, and return that; TimeoutError at the deadline."""
    deadline = time.monotonic() + deadline_s
    while not accept(last := fetch()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached after {deadline_s}s; last: {last!r}"[:2000])
        time.sleep(INTERVAL_S)  # polling interval, not a wait for a fixed delay
    return last


def wait_until(check: Callable[[], bool], deadline_s: float = 10.0, what: str = "condition") -> None:
    """Poll `check` until it holds; TimeoutError at the deadline."""
    poll(check, bool, deadline_s, what)


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 10.0) -> None:
    """Poll `check` (sync or async) on the event loop until it holds; TimeoutError after `within` s."""
    deadline = time.monotonic() + within
    while not await _holds(check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not reached after {within}s")
        await asyncio.sleep(INTERVAL_S)


async def _holds(value: Awaitable[bool] | bool) -> bool:
    return await value if inspect.isawaitable(value) else value
