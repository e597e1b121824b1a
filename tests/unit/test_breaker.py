"""The circuit breaker's state machine, driven with an explicit clock."""

from __future__ import annotations

from mirror.upstream.breaker import Breaker, State


def state(breaker: Breaker) -> State:
    """The state, read through a call so mypy does not narrow it across method calls."""
    return breaker.state


def test_opens_after_threshold_consecutive_failures() -> None:
    """Failures below the threshold keep it closed; the threshold-th opens it for the cool-down."""
    breaker = Breaker(threshold=3, cooldown=30)
    breaker.failed(0)
    breaker.failed(1)
    assert state(breaker) is State.CLOSED
    assert breaker.allow(2)
    breaker.failed(2)
    assert state(breaker) is State.OPEN
    assert not breaker.allow(31.9)


def test_success_resets_the_failure_count() -> None:
    """An answer between failures starts the count again."""
    breaker = Breaker(threshold=2, cooldown=30)
    breaker.failed(0)
    breaker.succeeded()
    breaker.failed(1)
    assert state(breaker) is State.CLOSED


def test_after_cooldown_exactly_one_probe_goes_through() -> None:
    """Once the cool-down ends, one request probes (half-open); others are kept away meanwhile."""
    breaker = Breaker(threshold=1, cooldown=10)
    breaker.failed(0)
    assert breaker.allow(10)
    assert state(breaker) is State.HALF_OPEN
    assert not breaker.allow(10.1)
    assert not breaker.allow(11)


def test_successful_probe_closes() -> None:
    """A probe that gets an answer closes the breaker."""
    breaker = Breaker(threshold=1, cooldown=10)
    breaker.failed(0)
    assert breaker.allow(10)
    assert breaker.succeeded() is State.HALF_OPEN
    assert state(breaker) is State.CLOSED
    assert breaker.allow(10.1)


def test_failed_probe_reopens_for_another_cooldown() -> None:
    """A probe that fails opens the breaker again from that moment."""
    breaker = Breaker(threshold=5, cooldown=10)
    for t in range(5):
        breaker.failed(t)
    assert breaker.allow(14)
    breaker.failed(14)
    assert state(breaker) is State.OPEN
    assert not breaker.allow(23.9)
    assert breaker.allow(24)


def test_retry_after_opens_at_once_for_its_duration() -> None:
    """A 429's Retry-After opens the breaker on the first failure, for that long (bounded)."""
    breaker = Breaker(threshold=3, cooldown=10, max_cooldown=600)
    breaker.failed(0, retry_after=120)
    assert state(breaker) is State.OPEN
    assert not breaker.allow(119)
    assert breaker.allow(120)
    breaker.failed(120, retry_after=10**6)
    assert breaker.open_until == 720


def test_forced_open_never_allows() -> None:
    """Offline mode: the breaker never lets a request through, whatever time it is."""
    breaker = Breaker(forced_open=True)
    assert not breaker.allow(0)
    assert not breaker.allow(10**9)
