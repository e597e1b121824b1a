"""Unit tests for mirror.ranges: parsing one `Range: bytes=...` header against a body size."""

from __future__ import annotations

import pytest

from mirror.errors import RangeNotSatisfiable
from mirror.ranges import ByteRange, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        pytest.param("bytes=0-", 100, ByteRange(0, 99, 100), id="open-from-zero"),
        pytest.param("bytes=10-19", 100, ByteRange(10, 19, 100), id="closed"),
        pytest.param("bytes=10-10", 100, ByteRange(10, 10, 100), id="single-byte"),
        pytest.param("bytes=90-", 100, ByteRange(90, 99, 100), id="open-from-middle"),
        pytest.param("bytes=99-", 100, ByteRange(99, 99, 100), id="open-last-byte"),
        pytest.param("bytes=90-1000", 100, ByteRange(90, 99, 100), id="end-beyond-size-clamps"),
        pytest.param("bytes=0-99", 100, ByteRange(0, 99, 100), id="exact-whole"),
        pytest.param("bytes=0-100", 100, ByteRange(0, 99, 100), id="end-equals-size-clamps"),
        pytest.param("bytes=-5", 100, ByteRange(95, 99, 100), id="suffix"),
        pytest.param("bytes=-100", 100, ByteRange(0, 99, 100), id="suffix-equals-size"),
        pytest.param("bytes=-500", 100, ByteRange(0, 99, 100), id="suffix-larger-than-size"),
        pytest.param("Bytes=0-4", 10, ByteRange(0, 4, 10), id="unit-case-insensitive"),
        pytest.param("  bytes=2-3  ", 10, ByteRange(2, 3, 10), id="surrounding-whitespace"),
    ],
)
def test_parse_range_satisfiable(header: str, size: int, expected: ByteRange) -> None:
    """A satisfiable single byte range becomes an inclusive ByteRange clamped to the body."""
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        pytest.param(None, 100, id="no-header"),
        pytest.param("", 100, id="empty-header"),
        pytest.param(None, 0, id="no-header-size-0"),
        pytest.param("bytes=0-4,10-14", 100, id="multi-range"),
        pytest.param("bytes=0-4, -5", 100, id="multi-range-with-suffix"),
        pytest.param("items=0-4", 100, id="other-unit"),
        pytest.param("0-4", 100, id="no-unit"),
        pytest.param("bytes=", 100, id="empty-spec"),
        pytest.param("bytes=-", 100, id="only-dash"),
        pytest.param("bytes=abc", 100, id="garbage"),
        pytest.param("bytes=5", 100, id="no-dash"),
        pytest.param("bytes=a-b", 100, id="letters"),
        pytest.param("bytes=1-b", 100, id="letter-last"),
        pytest.param("bytes=a-5", 100, id="letter-first"),
        pytest.param("bytes=-5-", 100, id="negative-first"),
        pytest.param("bytes=--5", 100, id="double-dash"),
        pytest.param("bytes=1 -5", 100, id="inner-space"),
        pytest.param("bytes=0x1-5", 100, id="hex"),
        pytest.param("bytes=1.5-3", 100, id="decimal"),
        pytest.param("bytes=0-4,10-14", 0, id="multi-range-size-0"),
    ],
)
def test_parse_range_ignored(header: str | None, size: int) -> None:
    """An absent, multi-range, foreign-unit or malformed Range header means the whole body (None)."""
    assert parse_range(header, size) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        pytest.param("bytes=100-", 100, id="start-equals-size"),
        pytest.param("bytes=150-200", 100, id="start-beyond-size"),
        pytest.param("bytes=20-10", 100, id="last-before-start"),
        pytest.param("bytes=-0", 100, id="zero-length-suffix"),
        pytest.param("bytes=0-", 0, id="open-on-empty-body"),
        pytest.param("bytes=0-0", 0, id="first-byte-of-empty-body"),
        pytest.param("bytes=-5", 0, id="suffix-on-empty-body"),
    ],
)
def test_parse_range_not_satisfiable(header: str, size: int) -> None:
    """A range that cannot be satisfied raises 416 RANGE_INVALID."""
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.status == 416


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=-0", 7), ("bytes=-1", 0)])
def test_parse_range_not_satisfiable_sets_content_range(header: str, size: int) -> None:
    """The 416 error carries `Content-Range: bytes */size` as RFC 9110 requires."""
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.headers == {"Content-Range": f"bytes */{size}"}


def test_byte_range_length_and_content_range() -> None:
    """ByteRange reports its inclusive length and its Content-Range value."""
    byte_range = ByteRange(10, 19, 100)
    assert (byte_range.length, byte_range.content_range()) == (10, "bytes 10-19/100")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("bytes=\u00b2-", id="superscript-first"),
        pytest.param("bytes=-\u00b2", id="superscript-suffix"),
        pytest.param("bytes=0-\u00b2", id="superscript-last"),
        pytest.param("bytes=" + "1" * 5000 + "-", id="5000-digit-first"),
    ],
)
def test_parse_range_ignores_non_ascii_and_huge_numbers(header: str) -> None:
    """A Range header whose numbers are not plain ASCII integers is ignored like other garbage."""
    assert parse_range(header, 100) is None
