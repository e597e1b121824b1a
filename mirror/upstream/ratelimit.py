"""Docker Hub's rate-limit headers, read on every upstream manifest answer.

`ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 76;w=21600`, `docker-ratelimit-source: <id>`. The
published numbers changed several times: they are read, never assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Window assumed when a header gives none (Docker Hub's documented 6 hours).
DEFAULT_WINDOW = 21600.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int
    remaining: int
    window: float
    source: str | None


def _quota(value: str) -> tuple[int, float | None] | None:
    """`76;w=21600` → (76, 21600.0); None when malformed."""
    number, *params = (part.strip() for part in value.split(";"))
    if not number.isascii() or not number.isdigit() or len(number) > 12:
        return None
    window = None
    for param in params:
        key, _, found = param.partition("=")
        if key.strip() == "w" and found.strip().isdigit() and len(found.strip()) <= 12:
            window = float(found.strip())
    return int(number), window


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimit | None:
    """The rate-limit state an upstream answer announces, or None when it announces none."""
    limit_header, remaining_header = headers.get("ratelimit-limit"), headers.get("ratelimit-remaining")
    if limit_header is None or remaining_header is None:
        return None
    limit, remaining = _quota(limit_header), _quota(remaining_header)
    if limit is None or remaining is None:
        return None
    window = remaining[1] or limit[1] or DEFAULT_WINDOW
    return RateLimit(limit[0], remaining[0], window, headers.get("docker-ratelimit-source"))


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds of a `Retry-After` header given as delta-seconds (HTTP dates are treated as absent)."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 9:
        return None
    return float(value.strip())
