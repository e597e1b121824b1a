"""The README's metric table agrees with the code where a label's values are enumerated."""

from __future__ import annotations

import re
from pathlib import Path

from mirror.metrics import UPSTREAM_ERROR_KINDS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_exactly_the_upstream_error_kinds() -> None:
    """The `kind` values the README gives for mirror_upstream_errors_total are the ones the code counts."""
    (row,) = [
        line
        for line in README.read_text().splitlines()
        if line.startswith("| `mirror_upstream_errors_total`")
    ]
    listed = re.search(r"`kind` \(([^)]*)\)", row)
    assert listed is not None
    assert tuple(kind.strip() for kind in listed.group(1).split(",")) == UPSTREAM_ERROR_KINDS
