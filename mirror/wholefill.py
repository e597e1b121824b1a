"""A fill whose whole body came with its headers (`upstream/early.py`): a small blob, held in memory.

The bytes are hashed as soon as they are there; then one thread step reserves the blob's room (the
same serial decision as every fill's, `storage/room.py`, which paces cold work under overload), writes
the temp file and commits it; then readers get the headers and the whole body from memory, with one
write. A blob that gets no room, or whose write fails, is still served from memory (only its next
readers go to upstream). A body that does not hash to its digest is refused before any reader got a
header (502), so no client ever receives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from mirror import oci
from mirror.storage.blobs import BlobStore
from mirror.storage.room import Reservation

#: Adopts a verified temp file as the blob (`Fills._adopt`): (reservation, digest, temp, size).
Adopt = Callable[[Reservation | None, str, Path, int], None]

#: Bodies up to this size are hashed on the event loop (about 45 µs at most here, like a log line);
#: larger ones in a thread, so the loop never stalls on one.
HASH_ON_LOOP = 64 * 1024


async def matches(digest: str, data: bytes) -> bool:
    """Whether `data` hashes to `digest`."""
    algorithm = oci.Digest.parse(digest).algorithm
    if len(data) <= HASH_ON_LOOP:
        return str(oci.Digest.of(data, algorithm)) == digest
    return await asyncio.to_thread(lambda: str(oci.Digest.of(data, algorithm)) == digest)


def store(blobs: BlobStore, adopt: Adopt, reservation: Reservation | None, digest: str, data: bytes) -> None:
    """Write verified `data` to a temp file and `adopt` it as `digest`, releasing `reservation` with the
    commit (blocking: one thread step for all of it). Raises OSError (or the store's StorageUnavailable)
    with nothing left behind."""
    path = blobs.write_temp(digest, data)
    try:
        adopt(reservation, digest, path, len(data))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
