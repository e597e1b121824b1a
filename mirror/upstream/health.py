"""What the mirror knows about an upstream's health: its circuit breaker and its rate-limit budget,
kept current from every upstream answer and exported as metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping

import structlog

from mirror import errors
from mirror.metrics import UPSTREAM_ERROR_KINDS, Metrics
from mirror.upstream.breaker import Breaker, State
from mirror.upstream.ratelimit import RateLimit, parse_ratelimit, retry_after_seconds

log = structlog.get_logger("mirror.upstream")


class UpstreamHealth:
    """Gatekeeper of one upstream's requests: `admit()` before, `answered()` / `failed()` after."""

    def __init__(self, label: str, breaker: Breaker, metrics: Metrics, ratelimit_reserve: int) -> None:
        self.label = label
        self.breaker = breaker
        self._metrics = metrics
        self._reserve = ratelimit_reserve
        self.ratelimit: RateLimit | None = None
        self._budget_low_until = 0.0
        metrics.breaker_state.labels(label).set(State.OPEN if breaker.forced_open else State.CLOSED)
        for kind in UPSTREAM_ERROR_KINDS:  # present at 0, so increase() sees the first error
            metrics.upstream_errors.labels(label, kind)

    def admit(self) -> None:
        """Raise UpstreamUnavailable at once when the breaker keeps requests away from the upstream."""
        if not self.breaker.allow(time.monotonic()):
            reason = "offline mode" if self.breaker.forced_open else "circuit breaker open"
            raise errors.UpstreamUnavailable(f"upstream {self.label} not contacted: {reason}")
        self._publish(self.breaker.state)

    def abandon(self) -> None:
        """The admitted request ended without an answer either way (cancelled): free the probe slot."""
        self.breaker.probing = False

    def answered(self, status: int, headers: Mapping[str, str], kind: str) -> None:
        """Record an upstream answer: 5xx and 429 count as failures, anything else as health."""
        if kind == "manifest":
            self._read_budget(headers)
        if status == 429:
            self.failed("429", retry_after_seconds(headers.get("Retry-After")))
        elif status >= 500:
            self.failed("5xx")
        else:
            before = self.breaker.succeeded()
            if before is not State.CLOSED:
                log.info("upstream_breaker_closed", upstream=self.label)
                self._publish(State.CLOSED)

    def failed(self, kind: str, retry_after: float | None = None) -> None:
        """Record a failure of `kind` (connect, timeout, 5xx, 429: UPSTREAM_ERROR_KINDS)."""
        self._metrics.upstream_errors.labels(self.label, kind).inc()
        before = self.breaker.failed(time.monotonic(), retry_after)
        if self.breaker.state is State.OPEN and before is not State.OPEN:
            log.warning(
                "upstream_breaker_opened",
                upstream=self.label,
                failures=self.breaker.failures,
                cooldown=round(self.breaker.open_until - time.monotonic(), 3),
                cause=kind,
            )
        self._publish(self.breaker.state)

    def budget_low(self) -> bool:
        """Whether the rate-limit budget is under the reserve: cached tags are then not revalidated."""
        return time.monotonic() < self._budget_low_until

    def _read_budget(self, headers: Mapping[str, str]) -> None:
        found = parse_ratelimit(headers)
        if found is None:
            return
        self.ratelimit = found
        self._metrics.ratelimit_limit.labels(self.label).set(found.limit)
        self._metrics.ratelimit_remaining.labels(self.label).set(found.remaining)
        if found.remaining < self._reserve:
            if not self.budget_low():
                log.warning(
                    "upstream_ratelimit_budget_low",
                    upstream=self.label,
                    remaining=found.remaining,
                    limit=found.limit,
                    window=found.window,
                    source=found.source,
                )
            self._budget_low_until = time.monotonic() + found.window
        else:
            self._budget_low_until = 0.0

    def _publish(self, state: State) -> None:
        self._metrics.breaker_state.labels(self.label).set(state)

    def status(self) -> dict[str, object]:
        """For /readyz: breaker state and budget."""
        found: dict[str, object] = {"breaker": self.breaker.state.name.lower()}
        if self.breaker.forced_open:
            found["breaker"] = "offline"
        if self.ratelimit is not None:
            found["ratelimit_remaining"] = self.ratelimit.remaining
            found["ratelimit_limit"] = self.ratelimit.limit
        return found
