"""Which bytes of a blob's temp file are present, and which windows side streams are fetching.

A fill's bytes arrive from its main stream (in order, hashed as they come) and from ranged side streams
that fetch a window far ahead for a reader who asked for it (see `fills.py`). Readers need "bytes
[a, b) are present", not just "written up to N": `Extents` is that set, kept as a few disjoint, sorted,
non-touching half-open ranges. `Window` is one side stream's claim on the bytes it is fetching. Pure.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass


class Extents:
    """A set of byte offsets as disjoint half-open ranges [start, end), merged when they touch."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []  # _ends[i] < _starts[i + 1]: touching ranges are merged

    def add(self, start: int, end: int) -> None:
        """Mark [start, end) present (overlaps with what is present are fine)."""
        if end <= start:
            return
        if self._ends and self._ends[-1] == start:  # the common case: a stream appends to the last range
            self._ends[-1] = end
            return
        # The first range that ends at or after `start` and the first that starts after `end`.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def run_from(self, pos: int) -> int:
        """The end of the present run that holds byte `pos`; `pos` itself when that byte is absent."""
        index = bisect.bisect_right(self._starts, pos) - 1
        if index >= 0 and self._ends[index] > pos:
            return self._ends[index]
        return pos

    def next_from(self, pos: int) -> int | None:
        """The first present offset at or after `pos`, None when there is none."""
        if self.run_from(pos) > pos:
            return pos
        index = bisect.bisect_right(self._starts, pos)
        return self._starts[index] if index < len(self._starts) else None

    @property
    def total(self) -> int:
        """How many bytes are present."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(zip(self._starts, self._ends, strict=True)))


@dataclass(eq=False, slots=True)
class Window:
    """Bytes [start, end) a side stream is fetching; `got` of them have arrived, in order."""

    start: int
    end: int
    got: int = 0
    active: bool = False  # its upstream answered 206 for exactly this window

    @property
    def front(self) -> int:
        """The next offset this stream will write."""
        return self.start + self.got

    def holds(self, pos: int) -> bool:
        return self.start <= pos < self.end
