"""HTTP byte ranges for blob responses: one range per request, as registry clients send."""

from __future__ import annotations

from dataclasses import dataclass

from mirror.errors import RangeNotSatisfiable


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range [start, end] of a body of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range a `Range` header asks for, None for the whole body; 416 when it cannot be satisfied.

    Multi-range and malformed headers are ignored (whole body), as RFC 9110 allows.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first or last) or not _is_number(first) or not _is_number(last):
        return None
    if not first:  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"bytes */{size}", headers={"Content-Range": f"bytes */{size}"})
        return ByteRange(max(size - suffix, 0), size - 1, size)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(f"bytes */{size}", headers={"Content-Range": f"bytes */{size}"})
    return ByteRange(start, end, size)


def _is_number(text: str) -> bool:
    """Empty, or ASCII digits short enough for `int` (a malformed header is ignored, never a 500)."""
    return not text or (text.isascii() and text.isdigit() and len(text) <= 20)
