"""Parsing Docker Hub's rate-limit headers and Retry-After."""

from __future__ import annotations

import pytest

from mirror.upstream.ratelimit import RateLimit, parse_ratelimit, retry_after_seconds


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "ratelimit-limit": "100;w=21600",
                "ratelimit-remaining": "76;w=21600",
                "docker-ratelimit-source": "203.0.113.7",
            },
            RateLimit(100, 76, 21600.0, "203.0.113.7"),
        ),
        (
            {"ratelimit-limit": "200;w=3600", "ratelimit-remaining": "0;w=3600"},
            RateLimit(200, 0, 3600.0, None),
        ),
        ({"ratelimit-limit": "100", "ratelimit-remaining": "5"}, RateLimit(100, 5, 21600.0, None)),
        (
            {"ratelimit-limit": " 100 ; w=60 ", "ratelimit-remaining": "7; w=60"},
            RateLimit(100, 7, 60.0, None),
        ),
        ({"ratelimit-limit": "100;w=21600"}, None),
        ({}, None),
        ({"ratelimit-limit": "lots", "ratelimit-remaining": "5"}, None),
        ({"ratelimit-limit": "100", "ratelimit-remaining": "-5"}, None),
        ({"ratelimit-limit": "100", "ratelimit-remaining": "9" * 40}, None),
    ],
)
def test_parse_ratelimit(headers: dict[str, str], expected: RateLimit | None) -> None:
    """The limit, remaining budget and window are read from the headers; malformed ones are ignored."""
    assert parse_ratelimit(headers) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("-1", None),
        ("1" * 20, None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """Retry-After as delta-seconds; dates and garbage are treated as absent."""
    assert retry_after_seconds(value) == expected
