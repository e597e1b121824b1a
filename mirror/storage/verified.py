"""Which stored blobs had their bytes hashed right since start-up, so a serve needs no re-hash.

Remembered in memory only (a restart forgets them all, which is the point: bytes can rot while the mirror
is down), one bit per index rowid: about 125 KB for a million blobs, growing only with the largest
rowid, never with the number of serves. A rowid is marked when a fill commits a blob (its bytes were
hashed on the way in), when a small blob is read and hashed whole, and when a serve's or the scrubber's
re-hash matched. A row deleted keeps its bit: SQLite reuses a rowid only for a new row, which in this
process comes from a commit, and that marks it anyway (no other process adds rows to the store).
"""

from __future__ import annotations

import threading

#: Bytes the bitmap grows by at a time (32,768 rowids).
GROWTH = 4096


class VerifiedRows:
    """A set of rowids as a bitmap; safe to use from any thread."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self._lock = threading.Lock()

    def __contains__(self, rowid: object) -> bool:
        if not isinstance(rowid, int) or rowid < 0:
            return False
        index, bit = divmod(rowid, 8)
        with self._lock:
            return index < len(self._bits) and bool(self._bits[index] >> bit & 1)

    def add(self, rowid: int) -> None:
        index, bit = divmod(rowid, 8)
        with self._lock:
            if index >= len(self._bits):
                self._bits.extend(bytes(index + GROWTH - len(self._bits)))
            self._bits[index] |= 1 << bit

    def discard(self, rowid: int) -> None:
        index, bit = divmod(rowid, 8)
        with self._lock:
            if index < len(self._bits):
                self._bits[index] &= ~(1 << bit) & 0xFF

    @property
    def nbytes(self) -> int:
        """Memory the bitmap holds."""
        return len(self._bits)
