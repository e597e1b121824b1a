"""What the proxy answers: a manifest, or a blob whose bytes come from one of four places.

A blob's bytes are in memory (a small blob), in a stored file, in the growing temp file of a fill
under way, or straight from upstream (a blob the cache cannot store): a closed union that
`transfer.send_blob` takes apart with `match`. Adding a place means adding a class here and a case
there; no caller tests flags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mirror.fills import Fill
from mirror.oci import Manifest
from mirror.passthrough import PassThrough
from mirror.storage.blobs import StoredBlob


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    manifest: Manifest
    result: str  # hit | miss | coalesced | revalidated | stale


@dataclass(frozen=True, slots=True)
class InMemory:
    """A small blob's whole bytes."""

    data: bytes


class Check(Protocol):
    """The re-hash of a stored blob not verified since start-up, shared by everyone serving it."""

    async def passed(self) -> bool:
        """Wait for the verdict: True when the bytes match the digest (False: the entry is dropped)."""
        ...


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored blob's open file (never evicted while open); `check` is its first-serve re-hash, if
    it has not been verified since start-up: its last byte waits for the verdict."""

    blob: StoredBlob
    check: Check | None = None


@dataclass(frozen=True, slots=True)
class Filling:
    """A fill under way (or just verified), acquired for reading: bytes arrive as it writes them."""

    fill: Fill


@dataclass(frozen=True, slots=True)
class Upstream:
    """A blob the cache could not store lately (`reason`): streamed from upstream, not stored."""

    through: PassThrough
    reason: str


BlobBytes = InMemory | Stored | Filling | Upstream


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    """A blob's size (None while a fill's upstream announced none), its bytes, and the cache result."""

    result: str  # hit | miss | coalesced
    size: int | None
    body: BlobBytes
    #: Makes where a reader of a fill that ends `unstored` gets the rest of the blob (None: nowhere);
    #: called only then.
    rest: Callable[[], PassThrough] | None = None

    def close(self) -> None:
        """Let go of the file or fill the bytes come from."""
        match self.body:
            case Stored(blob, _):
                blob.close()
            case Filling(fill):
                fill.release()
            case InMemory() | Upstream():
                pass
