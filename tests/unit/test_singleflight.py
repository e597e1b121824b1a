"""Unit tests for mirror.singleflight: one in-flight call per key, shared by concurrent callers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from mirror.singleflight import SingleFlight


@dataclass
class GatedCall:
    """A call that records each start, signals `started`, waits for `release`, then returns or raises."""

    result: str = "value"
    error: BaseException | None = None
    starts: int = 0
    cancelled: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self) -> str:
        self.starts += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return f"{self.result}{self.starts}"


def _start(
    flight: SingleFlight[str], key: str, call: Callable[[], Awaitable[str]]
) -> asyncio.Task[tuple[str, bool]]:
    return asyncio.ensure_future(flight.run(key, call))


async def test_same_key_calls_once() -> None:
    """Concurrent runs of the same key invoke the call once and all get its result."""
    flight: SingleFlight[str] = SingleFlight()
    call = GatedCall()
    callers = [_start(flight, "k", call) for _ in range(5)]
    await call.started.wait()
    call.release.set()
    results = await asyncio.gather(*callers)
    assert (call.starts, {value for value, _ in results}) == (1, {"value1"})


async def test_same_key_reports_joined() -> None:
    """The first caller of a key reports joined=False; the ones that joined it report True."""
    flight: SingleFlight[str] = SingleFlight()
    call = GatedCall()
    callers = [_start(flight, "k", call) for _ in range(4)]
    await call.started.wait()
    call.release.set()
    results = await asyncio.gather(*callers)
    assert [joined for _, joined in results] == [False, True, True, True]


async def test_different_keys_call_separately() -> None:
    """Runs with different keys each invoke their own call, neither joined."""
    flight: SingleFlight[str] = SingleFlight()
    call_a, call_b = GatedCall("a"), GatedCall("b")
    a, b = _start(flight, "a", call_a), _start(flight, "b", call_b)
    await call_a.started.wait()
    await call_b.started.wait()
    assert len(flight) == 2
    call_a.release.set()
    call_b.release.set()
    assert list(await asyncio.gather(a, b)) == [("a1", False), ("b1", False)]


async def test_exception_propagates_to_all_callers() -> None:
    """An exception from the shared call is raised to every caller of the key."""
    flight: SingleFlight[str] = SingleFlight()
    boom = RuntimeError("upstream failed")
    call = GatedCall(error=boom)
    callers = [_start(flight, "k", call) for _ in range(3)]
    await call.started.wait()
    call.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert (call.starts, outcomes) == (1, [boom, boom, boom])


async def test_cancelled_caller_does_not_cancel_shared_call() -> None:
    """Cancelling one caller leaves the shared call running and the other callers get its result."""
    flight: SingleFlight[str] = SingleFlight()
    call = GatedCall()
    first, second = _start(flight, "k", call), _start(flight, "k", call)
    await call.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    call.release.set()
    assert (await second, call.cancelled) == (("value1", True), False)


async def test_cancelled_only_caller_does_not_cancel_call() -> None:
    """When the starting caller is cancelled, a later caller of the key still joins the running call."""
    flight: SingleFlight[str] = SingleFlight()
    call = GatedCall()
    first = _start(flight, "k", call)
    await call.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    late = _start(flight, "k", call)
    call.release.set()
    assert (await late, call.starts) == (("value1", True), 1)


async def test_key_forgotten_after_completion() -> None:
    """After the call finishes its key is dropped, so the next run invokes the call anew."""
    flight: SingleFlight[str] = SingleFlight()
    call = GatedCall()
    call.release.set()
    first = await flight.run("k", call)
    assert len(flight) == 0
    assert (first, await flight.run("k", call)) == (("value1", False), ("value2", False))


async def test_key_forgotten_after_failure() -> None:
    """After the call fails its key is dropped, so a retry invokes the call anew."""
    flight: SingleFlight[str] = SingleFlight()
    call = GatedCall(error=ValueError("x"))
    call.release.set()
    with pytest.raises(ValueError, match="x"):
        await flight.run("k", call)
    call.error = None
    assert (len(flight), await flight.run("k", call)) == (0, ("value2", False))


async def test_close_cancels_inflight_calls() -> None:
    """close() cancels every call still in flight and waits for it to end."""
    flight: SingleFlight[str] = SingleFlight()
    call_a, call_b = GatedCall(), GatedCall()
    callers = [_start(flight, "a", call_a), _start(flight, "b", call_b)]
    await call_a.started.wait()
    await call_b.started.wait()
    await flight.close()
    assert (call_a.cancelled, call_b.cancelled, len(flight)) == (True, True, 0)
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)


async def test_close_with_nothing_in_flight() -> None:
    """close() on an idle SingleFlight returns without error."""
    flight: SingleFlight[str] = SingleFlight()
    await flight.close()
    assert len(flight) == 0
