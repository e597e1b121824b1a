"""A full, damaged or vanished cache disk degrades the mirror, never breaks it: damaged indexes are
moved aside, manifest writes are best effort, low disk and a deleted cache directory show in /readyz,
and the blobs of a deleted one still come whole."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import keys, oci
from tests.integration.conftest import MirrorFactory
from tests.integration.fake_upstream import FakeUpstream

Client = TestClient[web.Request, web.Application]
ACCEPT = {"Accept": oci.OCI_MANIFEST}


def _damage(path: Path, how: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "overwritten":
        path.write_bytes(b"this is not a database" * 100)
    else:  # truncated to half, its write-ahead log checkpointed into it first (as a clean stop leaves it)
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("index", ["blobs", "manifests"])
@pytest.mark.parametrize("how", ["overwritten", "truncated"])
async def test_damaged_index_is_moved_aside_and_started_empty(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path, index: str, how: str
) -> None:
    """A `cache.db` truncated to half or overwritten is moved aside and the mirror starts with an
    empty index and serves, instead of exiting with a traceback."""
    digest = fake.add_blob(b"b" * 5000)
    fake.add_manifest("library/app", "1", [digest])
    first = await make_mirror()
    assert (await first.get("/v2/library/app/manifests/1", headers=ACCEPT)).status == 200
    assert (await (await first.get(f"/v2/library/app/blobs/{digest}")).read()) == b"b" * 5000
    await first.close()
    db = tmp_path / "cache" / index / "cache.db"
    await asyncio.to_thread(_damage, db, how)
    mirror = await make_mirror()
    assert (await mirror.get("/v2/library/app/manifests/1", headers=ACCEPT)).status == 200
    assert (await (await mirror.get(f"/v2/library/app/blobs/{digest}")).read()) == b"b" * 5000
    moved = await asyncio.to_thread(lambda: [p.name for p in db.parent.glob("cache.db.damaged-*")])
    assert moved


async def test_manifest_disk_write_failure_never_fails_the_request(
    fake: FakeUpstream, mirror: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the manifest index's disk full, a manifest miss is still served 200 (kept in memory)."""
    fake.add_manifest("library/app", "1", [fake.add_blob(b"m" * 10)])

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    disk = mirror.app[keys.PROXIES]["docker.io"]._manifests._disk
    assert disk is not None
    monkeypatch.setattr(disk, "set", full)
    for _ in range(2):
        assert (await mirror.get("/v2/library/app/manifests/1", headers=ACCEPT)).status == 200


async def test_low_disk_is_degraded_in_readyz_and_free_bytes_a_metric(make_mirror: MirrorFactory) -> None:
    """Free space under disk_reserve_bytes makes /readyz say degraded (still 200); free bytes are exported."""
    mirror = await make_mirror(disk_reserve_bytes="1000T")
    ready = await mirror.get("/readyz")
    assert ready.status == 200
    doc = await ready.json()
    assert doc["status"] == "degraded"
    assert doc["disk"]["low"] is True
    text = await (await mirror.get("/metrics")).text()
    free = [line for line in text.splitlines() if line.startswith("mirror_cache_free_bytes ")]
    assert float(free[0].split()[1]) > 0


async def test_deleted_cache_directory_fails_readiness(mirror: Client, tmp_path: Path) -> None:
    """A cache directory deleted under a running mirror makes /readyz answer 503, so the orchestrator
    restarts the pod (instead of blobs answering 200 with 0 bytes)."""
    assert (await mirror.get("/readyz")).status == 200
    await asyncio.to_thread(shutil.rmtree, tmp_path / "cache")
    ready = await mirror.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["cache_writable"] is False


async def test_blobs_of_a_deleted_cache_directory_are_still_served_whole(
    fake: FakeUpstream, mirror: Client, tmp_path: Path
) -> None:
    """A stored blob whose cache directory was deleted under the running mirror comes whole from
    upstream (never 200 with 0 bytes), on every request until the pod is restarted."""
    data = bytes(range(256)) * 4096  # past the in-memory hot-blob size: a file on disk
    digest = fake.add_blob(data)
    assert await (await mirror.get(f"/v2/library/app/blobs/{digest}")).read() == data
    await asyncio.to_thread(shutil.rmtree, tmp_path / "cache")

    async def pull() -> bytes:
        resp = await mirror.get(f"/v2/library/app/blobs/{digest}")
        assert resp.status == 200, await resp.text()
        return await resp.read()

    for _ in range(3):  # at once: store calls from threads that open a new connection to it fail
        assert await asyncio.gather(*(pull() for _ in range(16))) == [data] * 16
    text = await (await mirror.get("/metrics")).text()
    assert 'mirror_blob_passthrough_total{reason="disk_error"}' in text
    assert 'mirror_blob_passthrough_total{reason="disk_full"} 0.0' in text
