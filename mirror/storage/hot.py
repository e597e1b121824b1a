"""Small blobs kept in memory (configs, tiny layers): a hit on one costs no thread hop and no file.

The bytes were verified when the blob was committed; the store stays the source of truth, this is only
a bounded, least-recently-used copy of its smallest entries.
"""

from __future__ import annotations

from collections import OrderedDict


class HotBlobs:
    """Least-recently-used blob bytes by digest, bounded in total bytes. Event-loop thread only."""

    def __init__(self, max_bytes: int, max_blob: int) -> None:
        self.max_bytes = max_bytes
        self.max_blob = max_blob
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, digest: str) -> bytes | None:
        data = self._items.get(digest)
        if data is not None:
            self._items.move_to_end(digest)
        return data

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self.max_blob or digest in self._items:
            return
        self._items[digest] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)
