"""The blob store: verified blobs on disk, one file per digest, indexed by diskcache.

diskcache owns the index (digest → file, size, access time); the files and their eviction are ours
(`plan_eviction` here, `eviction.py` for when it runs).
A verified fill is committed by renaming its temp file into the store (`BlobDisk.store`), so a blob is
written to disk exactly once. All methods are synchronous: callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import diskcache

from mirror.oci import Digest
from mirror.storage.failures import translated
from mirror.storage.hashing import READ_BYTES, hash_range
from mirror.storage.verified import VerifiedRows
from mirror.storage.writing import write_all


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


@dataclass(frozen=True, slots=True)
class BlobFile:
    """Where one stored blob's bytes are: its index row and its file (a new random name per commit)."""

    rowid: int
    digest: str
    size: int
    path: Path


@dataclass(slots=True)
class StoredBlob:
    """An open, size-checked blob file; while it is open the blob is never evicted."""

    file: IO[bytes]
    size: int
    release: Callable[[], None] = field(default=lambda: None)
    data: bytes | None = None  # the whole blob, read along with opening it when it is small
    where: BlobFile | None = None
    verified: bool = True  # its bytes were hashed since start-up (`BlobStore.verified`)

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
class StoreStats:
    """The store's totals, read without listing it."""

    entries: int
    size: int  # bytes of the blobs (what the size limit bounds)
    oldest_access: float | None
    newest_access: float | None


#: Rows or files read per query of a listing or check: memory stays bounded whatever the store's size.
BATCH = 1000
#: SQLite page cache of each connection to the index (diskcache opens one per thread), in 4 KiB pages:
#: 4 MiB holds the index's inner pages; diskcache's default, 32 MiB, times the threads that touch the
#: index made the heap grow by 80 MiB over an integrity pass of a million blobs.
INDEX_CACHE_PAGES = 1024
# The index is read with plain reads, not mapped (diskcache maps 64 MiB by default): the kernel's page
# cache keeps it just as well, and mapped pages counted in the mirror's RSS, which grew with the index
# (100,000 blobs: 84 MiB at ready against 54 MiB empty; unmapped, 59 MiB).


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
            sqlite_cache_size=INDEX_CACHE_PAGES,
            sqlite_mmap_size=0,
        )
        self.verified = VerifiedRows()  # rows whose file was hashed right since start-up
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
        self._make_blob_dirs()
        return removed

    def _make_blob_dirs(self) -> None:
        """The 256 directories new blobs go to, made now rather than by the first commit into each
        (a mkdir on the path of a cold blob)."""
        root = Path(self._cache.directory)
        for n in range(256):
            with contextlib.suppress(FileExistsError):
                (root / f"{n:02x}").mkdir()

    @translated
    def open_temp(self, digest: str) -> tuple[IO[bytes], Path, int]:
        """A new temp file for a fill of `digest`: open for writing, its path, and a read descriptor."""
        fd, name = tempfile.mkstemp(prefix=digest.replace(":", "-") + ".", dir=self.tmp_dir)
        return os.fdopen(fd, "wb", buffering=0), Path(name), os.open(name, os.O_RDONLY)

    @translated
    def write_temp(self, digest: str, data: bytes) -> Path:
        """A new temp file for `digest` holding `data`, closed (a body that came whole, in memory)."""
        fd, name = tempfile.mkstemp(prefix=digest.replace(":", "-") + ".", dir=self.tmp_dir)
        try:
            write_all(fd, memoryview(data))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        finally:
            os.close(fd)
        return Path(name)

    @translated
    def open(self, digest: str, read_below: int = 0) -> StoredBlob | None:
        """The stored blob, or None. A file whose size differs from the recorded one is dropped.

        A blob smaller than `read_below` bytes comes with its bytes already read (`data`)."""
        where = self._row(digest)
        if where is None:
            return None
        try:
            file = open(where.path, "rb")  # noqa: SIM115  # closed by StoredBlob.close
        except FileNotFoundError:  # deleted since the query
            return None
        size = where.size
        if os.fstat(file.fileno()).st_size != size:
            file.close()
            self._cache.delete(digest)
            return None
        with self._lock:
            self._reading[digest] += 1
            self._touched[digest] = time.time()
        data = file.read() if size < read_below else None
        if data is not None:  # a small blob is re-verified whenever it is read
            if str(Digest.of(data, Digest.parse(digest).algorithm)) != digest:
                file.close()
                self._done_reading(digest)
                self._cache.delete(digest)
                return None
            self.verified.add(where.rowid)
        verified = where.rowid in self.verified
        return StoredBlob(file, size, lambda: self._done_reading(digest), data, where, verified)

    def _row(self, digest: str) -> BlobFile | None:
        """The index row of `digest`: what diskcache's `get` reads, plus the rowid (what `verified`
        knows rows by); the tag column holds the recorded size (-1 when a row has none)."""
        row = self._cache._sql(
            "SELECT rowid, tag, filename FROM Cache WHERE key = ? AND raw = 1", (digest,)
        ).fetchone()
        if row is None or row[2] is None:
            return None
        size = -1 if row[1] is None else int(row[1])
        return BlobFile(int(row[0]), digest, size, Path(self._cache.directory) / row[2])

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
        if (where := self._row(digest)) is not None:  # its bytes were hashed on the way in
            self.verified.add(where.rowid)

    @translated
    def __contains__(self, digest: str) -> bool:
        return digest in self._cache

    @translated
    def usage(self) -> tuple[int, int]:
        """Bytes the store takes on disk (blob files and index), and how many blobs it holds."""
        return int(self._cache.volume()), len(self._cache)

    @translated
    def blob_bytes(self) -> int:
        """Sum of the sizes of the stored blobs (what the size limit bounds): a counter diskcache's
        triggers keep, so O(1) whatever the number of blobs."""
        return int(self._cache.reset("size"))

    def ensure_indexes(self) -> None:
        """Index the columns that listings by access time and the orphan check look up (once per store;
        on a large existing store this takes a while: run it in the background)."""
        self._cache._sql("CREATE INDEX IF NOT EXISTS mirror_access_time ON Cache(access_time)")
        self._cache._sql("CREATE INDEX IF NOT EXISTS mirror_filename ON Cache(filename)")

    def stats(self) -> StoreStats:
        """Count, bytes and the oldest and newest access, without listing the store."""
        self.flush_access()
        oldest, newest = self._cache._sql("SELECT MIN(access_time), MAX(access_time) FROM Cache").fetchone()
        return StoreStats(len(self._cache), self.blob_bytes(), oldest, newest)

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

    def entries(self) -> Iterator[BlobEntry]:
        """Every stored blob, least recently used first, read `BATCH` rows at a time."""
        self.flush_access()
        # diskcache has no public way to list by access time; its schema is stable across 5.x (pinned).
        after: tuple[float, int] = (float("-inf"), 0)
        while True:
            rows = self._cache._sql(
                "SELECT access_time, rowid, key, size, store_time FROM Cache"
                " WHERE (access_time, rowid) > (?, ?) ORDER BY access_time, rowid LIMIT ?",
                (*after, BATCH),
            ).fetchall()
            for at, _, key, size, st in rows:
                yield BlobEntry(str(key), int(size), float(st), float(at))
            if len(rows) < BATCH:
                return
            after = (rows[-1][0], rows[-1][1])

    def digests(self) -> list[str]:
        """Every stored digest (for the shared mode's announcements)."""
        return [str(k) for (k,) in self._cache._sql("SELECT key FROM Cache").fetchall()]

    @translated
    def bytes_of(self, digests: Collection[str]) -> int:
        """Total size of those of `digests` that are stored."""
        return self.held(digests)[1]

    @translated
    def held(self, digests: Collection[str]) -> tuple[int, int]:
        """How many of `digests` are stored, and their bytes: one indexed lookup each, so a metrics
        scrape costs the number of pinned blobs, not the size of the store."""
        count = total = 0
        for digest in digests:
            row = self._cache._sql("SELECT size FROM Cache WHERE key = ? AND raw = 1", (digest,)).fetchone()
            if row:
                count, total = count + 1, total + int(row[0])
        return count, total

    def remove(self, digest: str) -> bool:
        """Delete a blob; False when it was not stored."""
        return bool(self._cache.delete(digest))

    def plan_eviction(self, target: int, protected: Collection[str]) -> list[BlobEntry]:
        """What `evict` would delete now: least recently used first, until the blobs left add up to at
        most `target` bytes; never a protected (pinned) blob or one being read."""
        return list(self._eviction_order(target, protected))

    def _eviction_order(self, target: int, protected: Collection[str]) -> Iterator[BlobEntry]:
        spared = set(protected) | self.being_read()
        return eviction_order(self.entries(), self.blob_bytes(), target, spared)

    def evict(self, target: int, protected: Collection[str]) -> Iterator[BlobEntry]:
        """Delete what `plan_eviction` names as the caller iterates, `BATCH` blobs per index
        transaction, yielding each deleted blob: memory stays bounded however many go."""
        order = self._eviction_order(target, protected)
        while batch := list(itertools.islice(order, BATCH)):
            with self._cache.transact():
                deleted = [entry for entry in batch if self.remove(entry.digest)]
            yield from deleted

    def _files(self, after: int = 0, limit: int = BATCH) -> list[tuple[int, str, int, Path]]:
        """(rowid, digest, recorded size, path) of up to `limit` rows past `after`, without touching
        access times."""
        rows = self._cache._sql(
            "SELECT rowid, key, size, filename FROM Cache WHERE rowid > ? AND filename IS NOT NULL"
            " ORDER BY rowid LIMIT ?",
            (after, limit),
        )
        base = Path(self._cache.directory)
        return [(int(r), str(k), int(size), base / name) for r, k, size, name in rows.fetchall()]

    def files_after(self, after: int) -> list[BlobFile]:
        """Up to `BATCH` stored blobs past rowid `after`, in rowid order (the scrubber's batches)."""
        return [BlobFile(rowid, digest, size, path) for rowid, digest, size, path in self._files(after)]

    def drop_file(self, where: BlobFile) -> bool:
        """Delete the blob if its index row still names that file (not a copy stored anew since)."""
        return self._drop_row(where.rowid, where.digest, where.path)

    def _all_files(self) -> Iterator[tuple[str, int, Path]]:
        after = 0
        while batch := self._files(after):
            for rowid, digest, size, path in batch:
                after = rowid
                yield digest, size, path

    def check_rows(self, after: int) -> tuple[int | None, int, int]:
        """Check one batch of index rows past rowid `after` against their files, dropping rows whose file
        is missing or has another size: (the last rowid checked or None at the end, missing, wrong)."""
        batch = self._files(after)
        missing = wrong_size = 0
        for rowid, digest, size, path in batch:
            try:
                actual = path.stat().st_size
            except FileNotFoundError:
                missing += int(self._drop_row(rowid, digest, path))
                continue
            if actual != size:
                wrong_size += int(self._drop_row(rowid, digest, path))
        return (batch[-1][0] if batch else None), missing, wrong_size

    def _drop_row(self, rowid: int, digest: str, path: Path) -> bool:
        """Delete `digest` if its row still names `path`: a fill may have stored it anew meanwhile."""
        relative = str(path.relative_to(self._cache.directory))
        with self._cache.transact():
            row = self._cache._sql("SELECT filename FROM Cache WHERE rowid = ?", (rowid,)).fetchone()
            return bool(row and row[0] == relative and self._cache.delete(digest))

    def blob_dirs(self) -> list[Path]:
        """The directories blob files live in (256, plus any of diskcache's older two-level layout)."""
        root = Path(self._cache.directory)
        found: list[Path] = []
        for top in sorted(p for p in root.iterdir() if p.is_dir()):
            found.append(top)
            found.extend(sorted(p for p in top.iterdir() if p.is_dir()))
        return found

    def remove_orphans(self, directory: Path) -> tuple[int, int]:
        """Delete the blob files in `directory` that no index row names (left by a crash between the
        rename into the store and the index insert): (files looked at, files removed)."""
        root = Path(self._cache.directory)
        removed = 0
        with os.scandir(directory) as listing:
            names = [e.name for e in listing if e.is_file() and e.name.endswith(".val")]
        for name in names:
            relative = str((directory / name).relative_to(root))
            row = self._cache._sql("SELECT 1 FROM Cache WHERE filename = ?", (relative,)).fetchone()
            if row is None:
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
                    removed += 1
        return len(names), removed

    def verify_all(self) -> Iterator[tuple[str, int, bool | None]]:
        """Re-hash every blob, yielding (digest, size, verdict) as it goes; corrupt ones are dropped."""
        buffer = bytearray(READ_BYTES)
        for digest, size, path in self._all_files():
            yield digest, size, self._verify_file(digest, path, buffer)

    def _verify_file(self, digest: str, path: Path, buffer: bytearray) -> bool | None:
        """Reads the file directly, so verifying does not reorder the LRU."""
        expected = Digest.parse(digest)
        hasher = expected.hasher()
        try:
            with path.open("rb") as file:
                hash_range(file.fileno(), hasher, 0, None, buffer)
        except FileNotFoundError:
            return None
        if hasher.hexdigest() == expected.hex:
            return True
        self.remove(digest)
        return False

    def close(self) -> None:
        self.flush_access()
        self._cache.close()


def eviction_order(
    entries: Iterable[BlobEntry], volume: int, target: int, spared: Collection[str]
) -> Iterator[BlobEntry]:
    """The entries to evict from a store of `volume` bytes, taken in the order given (least recently
    used first), until the rest add up to at most `target` bytes; never one in `spared`. Lazy: reads
    only as many entries as it needs."""
    for entry in entries:
        if volume <= target:
            return
        if entry.digest not in spared:
            yield entry
            volume -= entry.size
