"""The blob store: verified blobs on disk, one file per digest, indexed by diskcache.

diskcache owns the index (digest → file, size, access time) and its eviction; the files are ours.
A verified fill is committed by renaming its temp file into the store (`BlobDisk.store`), so a blob is
written to disk exactly once. All methods are synchronous: callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import diskcache


@dataclass(frozen=True, slots=True)
class _VerifiedFile:
    """A temp file whose size and digest were checked: `BlobDisk` moves it into the store."""

    path: Path
    size: int


class BlobDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache ships no type hints
    """diskcache storage that adopts a verified temp file by rename instead of copying its bytes."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple[Any, ...]:
        if isinstance(value, _VerifiedFile):
            filename, full_path = self.filename(key, value)
            with contextlib.suppress(FileExistsError):
                os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.replace(value.path, full_path)
            return value.size, diskcache.core.MODE_BINARY, filename, None
        stored: tuple[Any, ...] = super().store(value, read, key)
        return stored


@dataclass(slots=True)
class StoredBlob:
    """An open, size-checked blob file. The open descriptor stays valid even if the blob is evicted."""

    file: IO[bytes]
    size: int

    def close(self) -> None:
        self.file.close()


class BlobStore:
    """Blobs by digest under `root`, with temp files for fills on the same filesystem."""

    def __init__(self, root: Path, size_limit: int) -> None:
        self.root = root
        self.size_limit = size_limit
        self.tmp_dir = root / "tmp"
        self._cache = diskcache.Cache(
            str(root / "blobs"),
            disk=BlobDisk,
            size_limit=size_limit,
            eviction_policy="least-recently-used",
            tag_index=False,
        )

    def recover(self) -> int:
        """Remove what interrupted fills left behind; returns how many temp files were removed."""
        removed = 0
        if self.tmp_dir.exists():
            removed = sum(1 for _ in self.tmp_dir.iterdir())
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        return removed

    def new_temp(self, digest: str) -> tuple[IO[bytes], Path]:
        """A new temp file for a fill of `digest`, open for writing."""
        fd, name = tempfile.mkstemp(prefix=digest.replace(":", "-") + ".", dir=self.tmp_dir)
        return os.fdopen(fd, "wb"), Path(name)

    def open(self, digest: str) -> StoredBlob | None:
        """The stored blob, or None. A file whose size differs from the recorded one is dropped."""
        found = self._cache.get(digest, read=True, tag=True)
        if found is None or found[0] is None:
            return None
        file, size = found
        if os.fstat(file.fileno()).st_size != size:
            file.close()
            self._cache.delete(digest)
            return None
        return StoredBlob(file, size)

    def size_of(self, digest: str) -> int | None:
        """The size of a stored (and size-checked) blob, or None."""
        blob = self.open(digest)
        if blob is None:
            return None
        blob.close()
        return blob.size

    def commit(self, digest: str, temp: Path, size: int) -> None:
        """Adopt a verified temp file as the blob `digest` (a rename, not a copy)."""
        self._cache.set(digest, _VerifiedFile(temp, size), tag=size)

    def __contains__(self, digest: str) -> bool:
        return digest in self._cache

    def usage(self) -> tuple[int, int]:
        """Bytes the store takes on disk (blob files and index), and how many blobs it holds."""
        return int(self._cache.volume()), len(self._cache)

    def close(self) -> None:
        self._cache.close()
