"""The present-bytes set of a fill: ranges merge, runs and gaps are found, against a plain set model."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from mirror.extents import Extents, Window

SPAN = 64
RANGES = st.lists(st.tuples(st.integers(0, SPAN), st.integers(0, SPAN)), max_size=12)


def built(ranges: list[tuple[int, int]]) -> tuple[Extents, set[int]]:
    extents, model = Extents(), set[int]()
    for start, end in ranges:
        extents.add(start, end)
        model.update(range(start, end))
    return extents, model


@given(RANGES)
def test_ranges_stay_sorted_disjoint_and_apart(ranges: list[tuple[int, int]]) -> None:
    """Whatever is added, the ranges are sorted, non-empty, and never touch (touching ones merge)."""
    extents, model = built(ranges)
    listed = list(extents)
    assert all(s < e for s, e in listed)
    assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(listed))
    assert {pos for s, e in listed for pos in range(s, e)} == model
    assert extents.total == len(model)


@given(RANGES, st.integers(0, SPAN + 1))
def test_run_from_ends_at_the_first_absent_byte(ranges: list[tuple[int, int]], pos: int) -> None:
    """`run_from(pos)` is the first absent offset at or after `pos` when `pos` is present, else `pos`."""
    extents, model = built(ranges)
    end = pos
    while end in model:
        end += 1
    assert extents.run_from(pos) == end


@given(RANGES, st.integers(0, SPAN + 1))
def test_next_from_is_the_first_present_offset(ranges: list[tuple[int, int]], pos: int) -> None:
    """`next_from(pos)` is the smallest present offset at or after `pos`, None past the last."""
    extents, model = built(ranges)
    after = [p for p in model if p >= pos]
    assert extents.next_from(pos) == (min(after) if after else None)


def test_appending_extends_the_last_range() -> None:
    """A stream writing on from the end of the last range keeps one range."""
    extents = Extents()
    extents.add(10, 20)
    extents.add(20, 25)
    assert list(extents) == [(10, 25)]


def test_an_empty_range_adds_nothing() -> None:
    """Adding [a, a) changes nothing."""
    extents = Extents()
    extents.add(5, 5)
    assert list(extents) == []
    assert extents.run_from(5) == 5


def test_window_front_and_holds() -> None:
    """A window's front moves with what arrived; it holds offsets in [start, end) only."""
    window = Window(100, 200, got=30)
    assert window.front == 130
    assert window.holds(100)
    assert window.holds(199)
    assert not window.holds(200)
    assert not window.holds(99)
