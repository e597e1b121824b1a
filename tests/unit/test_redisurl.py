"""Unit tests for mirror.cluster.redisurl: the three URL forms, their errors, and the hidden password."""

from __future__ import annotations

import pytest

from mirror.cluster.redisurl import RedisUrl, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisUrl("redis", (("127.0.0.1", 6379),), 0)),
        ("redis://redis", RedisUrl("redis", (("redis", 6379),), 0)),
        ("rediss://:pw@cache.example:6380/2", RedisUrl("rediss", (("cache.example", 6380),), 2, None, "pw")),
        ("redis://user:p%40ss@h:1/3", RedisUrl("redis", (("h", 1),), 3, "user", "p@ss")),
        (
            "redis+sentinel://s1:26379,s2/mymaster/1",
            RedisUrl("redis+sentinel", (("s1", 26379), ("s2", 26379)), 1, master="mymaster"),
        ),
        ("redis+sentinel://s1/mymaster", RedisUrl("redis+sentinel", (("s1", 26379),), 0, master="mymaster")),
    ],
)
def test_parse_accepts_each_form(text: str, expected: RedisUrl) -> None:
    """redis://, rediss:// and redis+sentinel:// URLs parse into hosts, db, credentials and master."""
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://h:6379",
        "redis://",
        "redis://h:0",
        "redis://h:99999",
        "redis://h/x",
        "redis://h/0/1",
        "redis://a,b/0",
        "redis://h/0?ssl=1",
        "redis+sentinel://s1",
        "redis+sentinel:///mymaster",
        "redis+sentinel://s1/m/0/extra",
    ],
)
def test_parse_refuses_what_is_not_a_redis_location(text: str) -> None:
    """Other schemes, missing hosts, bad ports or databases, queries and sentinel URLs without a
    master name are refused."""
    with pytest.raises(ValueError, match=r"."):
        parse(text)


def test_the_password_is_never_shown() -> None:
    """str() and repr() of a URL with a password show *** in its place."""
    url = parse("redis+sentinel://:s3cret-pass@s1:26379,s2:26380/mymaster/0")
    assert "s3cret-pass" not in str(url)
    assert "s3cret-pass" not in repr(url)
    assert str(url) == "redis+sentinel://:***@s1:26379,s2:26380/mymaster/0"


def test_a_bad_url_error_does_not_contain_the_password() -> None:
    """The error for a bad URL never repeats the password it was given."""
    with pytest.raises(ValueError, match=r".") as raised:
        parse("redis://:s3cret-pass@h:0/0")
    assert "s3cret-pass" not in str(raised.value)
