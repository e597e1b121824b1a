"""The pin record: which digests each configured pin resolved to at its last warm-up.

Kept in `pins.json` in the cache directory, so pinned blobs stay protected from eviction across restarts,
even before the next warm-up has run. Both the server and `mirror cache` read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

PINS_FILE = "pins.json"


class PinRecord:
    """The configured pins and the digests they hold; file access is blocking (run it in a thread)."""

    def __init__(self, refs: Iterable[str], cache_dir: Path) -> None:
        self.refs = tuple(refs)
        self._path = cache_dir / PINS_FILE
        self._digests: dict[str, list[str]] = {}
        self._warming: set[str] = set()

    def load(self) -> None:
        """Read the digests recorded by the last warm-up."""
        try:
            recorded = json.loads(self._path.read_text())
        except (OSError, ValueError):
            recorded = {}
        if isinstance(recorded, dict):
            self._digests = {
                r: list(d) for r, d in recorded.items() if r in self.refs and isinstance(d, list)
            }

    def digests(self) -> frozenset[str]:
        """Every digest held by a pin: never evicted."""
        return frozenset(d for found in self._digests.values() for d in found) | self._warming

    def warming(self, found: set[str]) -> None:
        """Protect `found` (filled in by a warm-up under way) until `record` or `abandon`."""
        self._warming = found

    def abandon(self) -> None:
        """The warm-up under way failed: its pin keeps the digests it had."""
        self._warming = set()

    def record(self, ref: str, digests: Iterable[str]) -> None:
        """Store what pin `ref` now holds, and save the record."""
        self._digests[ref] = sorted(digests)
        self._warming = set()
        temp = self._path.with_suffix(".tmp")
        temp.write_text(json.dumps(self._digests, indent=1))
        os.replace(temp, self._path)
