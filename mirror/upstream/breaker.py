"""A circuit breaker per upstream: after a few consecutive failures the upstream is considered down for
a cool-down period, so requests fail fast (and cached content is served at once) instead of each paying
a timeout; then one probe at a time checks whether it is back.

Pure state machine: the caller passes the clock, so it is tested without sleeping.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.IntEnum):
    """Values of the `mirror_upstream_breaker_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class Breaker:
    """`allow(now)` before each upstream request; `succeeded(now)` / `failed(now, retry_after)` after."""

    threshold: int = 3
    cooldown: float = 30.0
    max_cooldown: float = 3600.0
    forced_open: bool = False  # offline mode: never contact the upstream
    state: State = State.CLOSED
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False

    def allow(self, now: float) -> bool:
        """Whether a request may go upstream now; in half-open state only one probe at a time may."""
        if self.forced_open:
            return False
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and now < self.open_until:
            return False
        self.state = State.HALF_OPEN
        if self.probing:
            return False
        self.probing = True
        return True

    def succeeded(self) -> State:
        """The upstream answered: close the breaker. Returns the state before."""
        before = self.state
        self.state, self.failures, self.probing = State.CLOSED, 0, False
        return before

    def failed(self, now: float, retry_after: float | None = None) -> State:
        """The upstream failed (no answer, timeout, 5xx, 429). Returns the state before.

        A failed probe, the threshold-th consecutive failure, or a 429 with Retry-After opens the breaker
        for the cool-down (Retry-After's, if given, bounded by `max_cooldown`).
        """
        before = self.state
        self.failures += 1
        self.probing = False
        if retry_after is not None or self.state is State.HALF_OPEN or self.failures >= self.threshold:
            wait = self.cooldown if retry_after is None else min(max(retry_after, 0.0), self.max_cooldown)
            self.state, self.open_until = State.OPEN, now + wait
        return before
