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
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import diskcache

from mirror.oci import Digest
from mirror.storage.failures import translated


@dataclass(frozen=True, slots=True)
class _VerifiedFile:
    """A temp file whose size and digest were checked: `BlobDisk` moves it into the store."""

    path: Path
    size: int


class BlobDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache ships no type hints
    """diskcache storage that adopts a verified temp file by rename instead of copying its bytes."""

    def filename(
        self, key: Any = diskcache.core.UNKNOWN, value: Any = diskcache.core.UNKNOWN
    ) -> tuple[str, str]:
        """A random name under one of 256 directories. diskcache's default uses two levels (65,536
        directories), so nearly every new blob also created one or two directories: inodes that cost
        more to allocate than the blob's own. The name stays random: a blob stored again must never
        take the path of the copy it replaces, which diskcache deletes after."""
        hex_name = os.urandom(16).hex()
        filename = os.path.join(hex_name[:2], hex_name[2:] + ".val")
        return filename, os.path.join(self._directory, filename)

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
    """An open, size-checked blob file; while it is open the blob is never evicted."""

    file: IO[bytes]
    size: int
    release: Callable[[], None] = field(default=lambda: None)
    data: bytes | None = None  # the whole blob, read along with opening it when it is small

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
            self.release()


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """One stored blob as the index knows it (times are Unix seconds)."""

    digest: str
    size: int
    stored_at: float
    accessed_at: float


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What the start-up integrity check dropped."""

    missing: int = 0  # index rows whose file is gone
    wrong_size: int = 0  # files whose size no longer matches the index
    orphans: int = 0  # files or rows diskcache found unreferenced


class BlobStore:
    """Blobs by digest under `root`, with temp files for fills on the same filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        # diskcache never culls or updates access times by itself (policy "none"): eviction is ours, so it
        # can spare pinned blobs and blobs being read, and a hit costs no SQLite write: access times are
        # kept in memory and written in batches (`flush_access`).
        self._cache = diskcache.Cache(
            str(root / "blobs"),
            disk=BlobDisk,
            size_limit=2**62,
            cull_limit=0,
            eviction_policy="none",
            tag_index=False,
        )
        self._reading: Counter[str] = Counter()
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def recover(self) -> int:
        """Remove what interrupted fills left behind; returns how many temp files were removed."""
        removed = 0
        if self.tmp_dir.exists():
            removed = sum(1 for _ in self.tmp_dir.iterdir())
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        return removed

    @translated
    def open_temp(self, digest: str) -> tuple[IO[bytes], Path, int]:
        """A new temp file for a fill of `digest`: open for writing, its path, and a read descriptor."""
        fd, name = tempfile.mkstemp(prefix=digest.replace(":", "-") + ".", dir=self.tmp_dir)
        return os.fdopen(fd, "wb", buffering=0), Path(name), os.open(name, os.O_RDONLY)

    @translated
    def open(self, digest: str, read_below: int = 0) -> StoredBlob | None:
        """The stored blob, or None. A file whose size differs from the recorded one is dropped.

        A blob smaller than `read_below` bytes comes with its bytes already read (`data`)."""
        found = self._cache.get(digest, read=True, tag=True)
        if found is None or found[0] is None:
            return None
        file, size = found
        if os.fstat(file.fileno()).st_size != size:
            file.close()
            self._cache.delete(digest)
            return None
        with self._lock:
            self._reading[digest] += 1
            self._touched[digest] = time.time()
        data = file.read() if size < read_below else None
        if data is not None and str(Digest.of(data, Digest.parse(digest).algorithm)) != digest:  # re-verified
            file.close()
            self._done_reading(digest)
            self._cache.delete(digest)
            return None
        return StoredBlob(file, size, lambda: self._done_reading(digest), data)

    def touch(self, digest: str) -> None:
        """Record a hit served without opening the file (from memory), for the LRU order."""
        with self._lock:
            self._touched[digest] = time.time()

    def _done_reading(self, digest: str) -> None:
        with self._lock:
            self._reading[digest] -= 1
            if self._reading[digest] <= 0:
                del self._reading[digest]

    def being_read(self) -> set[str]:
        """Digests some client is reading right now."""
        with self._lock:
            return set(self._reading)

    @translated
    def size_of(self, digest: str) -> int | None:
        """The size of a stored (and size-checked) blob, or None."""
        blob = self.open(digest)
        if blob is None:
            return None
        blob.close()
        return blob.size

    @translated
    def commit(self, digest: str, temp: Path, size: int) -> None:
        """Adopt a verified temp file as the blob `digest` (a rename, not a copy)."""
        self._cache.set(digest, _VerifiedFile(temp, size), tag=size)

    @translated
    def __contains__(self, digest: str) -> bool:
        return digest in self._cache

    def usage(self) -> tuple[int, int]:
        """Bytes the store takes on disk (blob files and index), and how many blobs it holds."""
        return int(self._cache.volume()), len(self._cache)

    def blob_bytes(self) -> int:
        """Sum of the sizes of the stored blobs (what the size limit bounds)."""
        row = self._cache._sql("SELECT COALESCE(SUM(size), 0) FROM Cache").fetchone()
        return int(row[0])

    def flush_access(self) -> int:
        """Write the access times of recent hits to the index, in one transaction; how many."""
        with self._lock:
            touched, self._touched = self._touched, {}
        if touched:
            with self._cache.transact():
                for digest, when in touched.items():
                    self._cache._sql(
                        "UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1", (when, digest)
                    )
        return len(touched)

    def entries(self) -> list[BlobEntry]:
        """Every stored blob, least recently used first."""
        self.flush_access()
        # diskcache has no public way to list by access time; its schema is stable across 5.x (pinned).
        rows = self._cache._sql("SELECT key, size, store_time, access_time FROM Cache ORDER BY access_time")
        return [BlobEntry(str(k), int(size), float(st), float(at)) for k, size, st, at in rows.fetchall()]

    def digests(self) -> list[str]:
        """Every stored digest (for the shared mode's announcements)."""
        return [str(k) for (k,) in self._cache._sql("SELECT key FROM Cache").fetchall()]

    def bytes_of(self, digests: Collection[str]) -> int:
        """Total size of those of `digests` that are stored: one indexed lookup each, so a metrics
        scrape costs the number of pinned blobs, not the size of the store."""
        total = 0
        for digest in digests:
            row = self._cache._sql("SELECT size FROM Cache WHERE key = ? AND raw = 1", (digest,)).fetchone()
            total += int(row[0]) if row else 0
        return total

    def remove(self, digest: str) -> bool:
        """Delete a blob; False when it was not stored."""
        return bool(self._cache.delete(digest))

    def plan_eviction(self, target: int, protected: Collection[str]) -> list[BlobEntry]:
        """What `evict` would delete now: least recently used first, until the blobs left add up to at
        most `target` bytes; never a protected (pinned) blob or one being read."""
        return plan_eviction(self.entries(), target, set(protected) | self.being_read())

    def evict(self, target: int, protected: Collection[str]) -> list[BlobEntry]:
        """Delete what `plan_eviction` names; returns what was deleted."""
        return [entry for entry in self.plan_eviction(target, protected) if self.remove(entry.digest)]

    def _files(self) -> list[tuple[str, int, Path]]:
        """(digest, recorded size, path) of every row, read without touching access times."""
        rows = self._cache._sql("SELECT key, size, filename FROM Cache WHERE filename IS NOT NULL")
        base = Path(self._cache.directory)
        return [(str(k), int(size), base / name) for k, size, name in rows.fetchall()]

    def check(self) -> CheckReport:
        """Start-up integrity: drop rows whose file is missing or has another size, then let diskcache
        remove files nothing refers to. Access times (the LRU order) are left as they were."""
        missing = wrong_size = 0
        for digest, size, path in self._files():
            try:
                actual = path.stat().st_size
            except FileNotFoundError:
                missing += int(self.remove(digest))
                continue
            if actual != size:
                wrong_size += int(self.remove(digest))
        orphans = len(self._cache.check(fix=True))
        return CheckReport(missing, wrong_size, orphans)

    def verify_all(self) -> Iterator[tuple[str, int, bool | None]]:
        """Re-hash every blob, yielding (digest, size, verdict) as it goes; corrupt ones are dropped."""
        for digest, size, path in self._files():
            yield digest, size, self._verify_file(digest, path)

    def _verify_file(self, digest: str, path: Path) -> bool | None:
        """Reads the file directly, so verifying does not reorder the LRU."""
        expected = Digest.parse(digest)
        hasher = expected.hasher()
        try:
            with path.open("rb") as file:
                for chunk in iter(lambda: file.read(1024 * 1024), b""):
                    hasher.update(chunk)
        except FileNotFoundError:
            return None
        if hasher.hexdigest() == expected.hex:
            return True
        self.remove(digest)
        return False

    def close(self) -> None:
        self.flush_access()
        self._cache.close()


def plan_eviction(entries: list[BlobEntry], target: int, spared: Collection[str]) -> list[BlobEntry]:
    """The entries to evict, least recently used first, until the rest add up to at most `target`
    bytes; never one in `spared`."""
    volume = sum(e.size for e in entries)
    planned: list[BlobEntry] = []
    for entry in sorted(entries, key=lambda e: e.accessed_at):
        if volume <= target:
            break
        if entry.digest not in spared:
            planned.append(entry)
            volume -= entry.size
    return planned
