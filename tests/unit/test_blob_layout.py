"""The blob store on disk: one level of at most 256 directories, made at start-up; blobs stored under
diskcache's own two-level layout (by earlier versions) stay readable; sizes of a set of digests by index
lookups; one eviction plan for `evict` and `prune --dry-run`."""

from __future__ import annotations

from pathlib import Path

import diskcache

from mirror.storage.blobs import BlobStore
from tests.support.digests import sha256
from tests.support.store import put_blob


def path_of(store: BlobStore, digest: str) -> Path:
    found = store.open(digest)
    assert found is not None
    found.close()
    return Path(found.file.name)


def test_blob_files_sit_one_directory_deep_in_at_most_256_directories(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    try:
        store.recover()
        digests = [put_blob(store, b"blob %d" % n) for n in range(600)]
        blobs = tmp_path / "blobs"
        files = list(blobs.rglob("*.val"))
        assert len(files) == len(digests)
        assert {len(p.relative_to(blobs).parts) for p in files} == {2}
        assert len({p.parent for p in files}) <= 256
        for digest in digests[:5]:
            stored = store.open(digest)
            assert stored is not None
            stored.close()
    finally:
        store.close()


def test_start_up_makes_the_blob_directories_so_a_commit_makes_none(tmp_path: Path) -> None:
    """`recover` makes all 256 directories: committing a cold blob creates no directory on its path."""
    store = BlobStore(tmp_path)
    try:
        store.recover()
        before = {p for p in (tmp_path / "blobs").iterdir() if p.is_dir()}
        put_blob(store, b"x" * 100_000)
        after = {p for p in (tmp_path / "blobs").iterdir() if p.is_dir()}
        assert len(before) == 256
        assert after == before
    finally:
        store.close()


def test_a_blob_stored_under_the_old_two_level_layout_is_still_served(tmp_path: Path) -> None:
    old = diskcache.Cache(str(tmp_path / "blobs"), eviction_policy="none", tag_index=False)
    data = b"x" * 100_000  # big enough for diskcache to keep it in a file, not in SQLite
    digest = sha256(data)
    old.set(digest, data, read=False, tag=len(data))
    old.close()
    assert [len(p.relative_to(tmp_path / "blobs").parts) for p in (tmp_path / "blobs").rglob("*.val")] == [3]

    store = BlobStore(tmp_path)
    try:
        stored = store.open(digest)
        assert stored is not None
        assert stored.file.read() == data
        stored.close()
    finally:
        store.close()


def test_bytes_of_sums_only_the_stored_digests_asked_for(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    try:
        store.recover()
        a, b, _ = put_blob(store, b"a" * 10), put_blob(store, b"b" * 200), put_blob(store, b"c" * 3000)
        missing = "sha256:" + "0" * 64
        assert store.bytes_of({a, b, missing}) == 210
        assert store.bytes_of(set()) == 0
    finally:
        store.close()


def test_the_eviction_plan_spares_a_blob_being_read_as_evict_does(tmp_path: Path) -> None:
    """`plan_eviction` (what `prune --dry-run` lists) never names a blob a client is reading, and
    `evict` deletes exactly what it names."""
    store = BlobStore(tmp_path)
    try:
        store.recover()
        read, idle = put_blob(store, b"r" * 10), put_blob(store, b"i" * 10)
        reader = store.open(read)
        assert reader is not None
        planned = store.plan_eviction(0, protected=())
        assert [e.digest for e in planned] == [idle]
        assert [e.digest for e in store.evict(0, protected=())] == [idle]
        assert read in store
        reader.close()
    finally:
        store.close()


def test_check_rows_drops_rows_whose_file_is_gone_or_resized_in_batches(tmp_path: Path) -> None:
    """The integrity pass drops a row whose file is missing or has another size, batch by batch."""
    store = BlobStore(tmp_path)
    try:
        store.recover()
        digests = [put_blob(store, b"blob %d" % n) for n in range(2500)]
        path_of(store, digests[0]).unlink()
        path_of(store, digests[1]).write_bytes(b"other length")
        after: int | None = 0
        batches = dropped = 0
        while after is not None:
            after, missing, wrong = store.check_rows(after)
            batches, dropped = batches + 1, dropped + missing + wrong
        assert dropped == 2
        assert batches == 4  # 1000 rows at a time, and one empty read at the end
        assert digests[0] not in store
        assert digests[1] not in store
        assert digests[2] in store
    finally:
        store.close()


def test_orphan_files_are_removed_and_referenced_ones_kept(tmp_path: Path) -> None:
    """A blob file no index row names (a crash between rename and insert) is deleted; stored ones stay."""
    store = BlobStore(tmp_path)
    try:
        store.recover()
        kept = put_blob(store, b"kept")
        directory = store.blob_dirs()[0]
        orphan = directory / ("0" * 30 + ".val")
        orphan.write_bytes(b"left by a crash")
        assert sum(store.remove_orphans(d)[1] for d in store.blob_dirs()) == 1
        assert not orphan.exists()
        found = store.open(kept)
        assert found is not None
        assert found.file.read() == b"kept"
        found.close()
    finally:
        store.close()
