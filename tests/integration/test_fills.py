"""One upstream fetch per blob, read live by every client: late joiners, slow readers, ranges,
disconnects, prefetch, shutdown and a killed mirror."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mirror import keys
from mirror.storage.room import Reservation
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
MIB = 1024 * 1024


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def written(mirror: Client, digest: str) -> int:
    """Bytes the fill of `digest` has written so far (-1 when none is under way)."""
    fill = mirror.app[keys.FILLS].get(digest)
    return fill.written if fill is not None else -1


async def test_late_joiner_gets_headers_at_once_and_shares_the_fetch(
    fake: FakeUpstream, mirror: Client
) -> None:
    """A client arriving at 90 % of a stalled fill gets its headers immediately and all bytes after."""
    data = payload(4 * MIB)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_late"
    first = await mirror.get(f"/v2/library/x/blobs/{digest}")
    await eventually(lambda: written(mirror, digest) >= len(data) * 9 // 10)
    late = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert late.status == 200
    assert late.headers["Content-Length"] == str(len(data))
    ranged = await mirror.get(f"/v2/library/x/blobs/{digest}", headers={"Range": f"bytes={len(data) - 10}-"})
    assert ranged.status == 206
    fake.release.set()
    assert await first.read() == data
    assert await late.read() == data
    assert await ranged.read() == data[-10:]
    assert len(fake.requests("GET", "/blobs/")) == 1
    assert "mirror_fill_readers_joined_total 2.0" in await (await mirror.get("/metrics")).text()


async def test_a_fill_is_gone_from_the_table_the_moment_it_ends(fake: FakeUpstream, mirror: Client) -> None:
    """When a fill ends, no request can join it any more: one right after gets the stored blob, never
    a finished fill whose file is already closed."""
    data = payload(300_000)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_late"
    first = await mirror.get(f"/v2/library/x/blobs/{digest}")
    fill = mirror.app[keys.FILLS].get(digest)
    assert fill is not None
    fake.release.set()
    await fill.done.wait()
    assert mirror.app[keys.FILLS].get(digest) is None
    assert await first.read() == data
    again = await mirror.get(f"/v2/library/x/blobs/{digest}", headers={"Range": "bytes=1000-"})
    assert await again.read() == data[1000:]


async def test_slow_reader_slows_neither_the_fill_nor_a_fast_reader(
    fake: FakeUpstream, mirror: Client
) -> None:
    """A reader that stops reading does not hold up a fast reader or the commit of the blob."""
    data = payload(24 * MIB)
    digest = fake.add_blob(data)
    slow = await mirror.get(f"/v2/library/x/blobs/{digest}")
    head = await slow.content.readexactly(1024)
    fast = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert await fast.read() == data
    await eventually(lambda: stored(mirror, digest))
    assert head + await slow.read() == data
    assert len(fake.requests("GET", "/blobs/")) == 1


async def test_all_readers_leaving_still_commits(fake: FakeUpstream, mirror: Client) -> None:
    """Every client hanging up mid-blob leaves the fill running to a verified commit."""
    data = payload(2 * MIB)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_midway"
    readers = [await mirror.get(f"/v2/library/x/blobs/{digest}") for _ in range(3)]
    for reader in readers:
        await reader.content.readexactly(100)
        reader.close()
    fake.release.set()
    await eventually(lambda: stored(mirror, digest))
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert len(fake.requests("GET", "/blobs/")) == 1


async def test_prefetch_fills_layers_after_a_manifest_miss(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """With prefetch on, a manifest miss starts fills for config and layers; the pulls then hit."""
    mirror = await make_mirror(prefetch=True)
    layers = [fake.add_blob(payload(1000, seed)) for seed in range(3)]
    fake.add_manifest("library/app", "1", layers)
    assert (await mirror.get("/v2/library/app/manifests/1")).status == 200
    for digest in layers:
        await eventually(lambda d=digest: stored(mirror, d))  # type: ignore[misc]
    assert fake.requests("GET", "/blobs/") != []
    for digest in layers:
        resp = await mirror.get(f"/v2/library/app/blobs/{digest}")
        assert await resp.read() == fake.blobs[digest]
    assert len(fake.requests("GET", "/blobs/")) == len(layers)


async def test_prefetch_is_off_by_default(fake: FakeUpstream, mirror: Client) -> None:
    """Without prefetch a manifest pull fetches no blob."""
    fake.add_manifest("library/app", "1", [fake.add_blob(b"layer")])
    assert (await mirror.get("/v2/library/app/manifests/1")).status == 200
    assert fake.requests("GET", "/blobs/") == []


async def test_shutdown_cancels_a_stuck_fill_without_committing(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """A fill still stuck when the shutdown grace ends is cancelled; its temp file is removed."""
    mirror = await make_mirror(shutdown_grace=0.1)
    data = payload(MIB)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_midway"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    await eventually(lambda: written(mirror, digest) > 0)
    resp.close()
    store = mirror.app[keys.STORE]
    await mirror.close()
    assert not await asyncio.to_thread(store.__contains__, digest)
    assert await asyncio.to_thread(lambda: list((tmp_path / "cache" / "tmp").iterdir())) == []


async def test_shutdown_lets_a_running_fill_finish(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """Within the grace period a fill under way completes and is committed."""
    mirror = await make_mirror(shutdown_grace=30)
    digest = fake.add_blob(payload(MIB))
    fake.faults[digest] = "stall_midway"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    await eventually(lambda: written(mirror, digest) > 0)
    resp.close()
    closing = asyncio.create_task(mirror.close())
    fake.release.set()
    await closing
    reopened = await make_mirror()
    assert await stored(reopened, digest)


async def test_killed_mid_fill_leaves_nothing_visible(
    fake: FakeUpstream, upstream: TestServer, tmp_path: Path
) -> None:
    """kill -9 during a fill: after restart no partial blob exists and a pull gets the right bytes."""
    data = payload(2 * MIB)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_midway"
    proc = MirrorProcess(tmp_path / "proc", str(upstream.make_url("")).rstrip("/"))
    await asyncio.to_thread(proc.start)
    try:  # stopped whatever fails below: no mirror outlives the test
        url = f"{proc.url}/v2/library/x/blobs/{digest}"
        reader = asyncio.create_task(asyncio.to_thread(raw_request, "GET", url))
        await eventually(lambda: len(fake.requests("GET", "/blobs/")) == 1)
        # The temp file is made once the upstream's headers are back, a moment after it saw the GET.
        await eventually(
            lambda: asyncio.to_thread(lambda: len(list((proc.cache_dir / "tmp").iterdir())) == 1)
        )
        await asyncio.to_thread(proc.stop, signal.SIGKILL)
        await asyncio.gather(reader, return_exceptions=True)
        fake.faults.pop(digest)
        await asyncio.to_thread(proc.start)
        assert await asyncio.to_thread(lambda: list((proc.cache_dir / "tmp").iterdir())) == []
        resp = await asyncio.to_thread(raw_request, "GET", url)
        assert resp.body == data
    finally:
        fake.release.set()
        await asyncio.to_thread(proc.stop)


async def test_a_committed_fill_releases_its_reservation_with_the_commit(
    fake: FakeUpstream, mirror: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A committed fill gives its reserved bytes back in the commit itself, with no release (and no
    thread hop) after it, and a request right after gets the stored blob whole (a request once joined
    a finished fill while it still released its reservation, and got the 500's bytes as its body)."""
    data = payload(100_000, seed=11)
    digest = fake.add_blob(data)
    releases: list[Reservation] = []
    release = Reservation.release

    def counted_release(self: Reservation) -> None:
        releases.append(self)
        release(self)

    monkeypatch.setattr(Reservation, "release", counted_release)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    await eventually(lambda: mirror.app[keys.FILLS].get(digest) is None)
    again = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert (again.status, await again.read()) == (200, data)
    assert releases == []
    assert "mirror_cache_reserved_bytes 0.0" in await (await mirror.get("/metrics")).text()
