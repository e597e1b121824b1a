"""Fills under way count against cache_max_bytes, and a blob the cache cannot store still reaches every
reader whole, streamed from upstream (in-process mirror, fake upstream on a real socket)."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import keys
from mirror.storage.room import Room
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
KB = 1000
LIMIT = 1024**2  # cache_max_bytes "1M": watermarks 0.95 and 0.90


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _room(mirror: Client) -> Room:
    room = mirror.app[keys.FILLS]._room
    assert room is not None
    return room


async def _metric(mirror: Client, sample: str) -> float:
    text = await (await mirror.get("/metrics")).text()
    found = [line for line in text.splitlines() if line.startswith(sample + " ")]
    return float(found[0].split()[1]) if found else 0.0


async def test_fills_evict_first_and_the_store_stays_within_the_limit(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Three blobs stored, then two fills stalled mid-way: each reserves its size and evicts first,
    so stored plus reserved bytes never pass cache_max_bytes while they run and after they commit."""
    mirror = await make_mirror(cache_max_bytes=str(LIMIT))
    room = _room(mirror)
    old = [fake.add_blob(_payload(250 * KB, seed)) for seed in range(3)]
    for digest in old:
        assert len(await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read()) == 250 * KB
    new = {fake.add_blob(_payload(250 * KB, seed)): seed for seed in (10, 11)}
    for digest in new:
        fake.faults[digest] = "stall_midway"
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, await asyncio.to_thread(room.used))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    gets = [asyncio.create_task(mirror.get(f"/v2/library/x/blobs/{d}")) for d in new]
    await eventually(lambda: room.reserved == 500 * KB)
    assert await _metric(mirror, "mirror_cache_reserved_bytes") == 500 * KB
    assert await _metric(mirror, "mirror_cache_evictions_total") == 2
    fake.release.set()
    for get, seed in zip(gets, new.values(), strict=True):
        assert await (await get).read() == _payload(250 * KB, seed)
    for digest in new:
        await eventually(lambda d=digest: stored(mirror, d))  # type: ignore[misc]
    await eventually(lambda: room.reserved == 0)
    sampling = False
    await sampler
    assert 0 < peak <= LIMIT
    assert await asyncio.to_thread(room.used) <= LIMIT


async def test_blob_larger_than_the_cache_is_streamed_whole_and_not_stored(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A blob larger than cache_max_bytes reaches the client whole, is not stored, and is counted;
    its next reader is streamed from upstream at once, without starting another fill."""
    mirror = await make_mirror(cache_max_bytes=str(LIMIT))
    data = _payload(LIMIT + 1, seed=1)
    digest = fake.add_blob(data)
    for _ in range(2):
        resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
        assert resp.status == 200
        assert await resp.read() == data
    assert not await stored(mirror, digest)
    assert await _metric(mirror, 'mirror_blob_passthrough_total{reason="too_large"}') == 2
    # The first reader: the fill's request (headers only) and its own; the second: its own only.
    assert len(fake.requests("GET", "/blobs/")) == 3


async def test_ranged_pass_through_sends_the_range(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """A Range of a blob that cannot be stored is answered 206 with exactly those bytes (a ranged
    upstream request; the digest of a part cannot be checked, its length is)."""
    mirror = await make_mirror(cache_max_bytes=str(LIMIT))
    data = _payload(LIMIT + 5000, seed=2)
    digest = fake.add_blob(data)
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}", headers={"Range": "bytes=1000-2999"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 1000-2999/{len(data)}"
    assert await resp.read() == data[1000:3000]
    assert any(s.headers.get("Range") == "bytes=1000-" for s in fake.requests("GET", "/blobs/"))


async def test_pass_through_of_wrong_bytes_never_sends_the_whole_body(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Upstream bytes that do not hash to the digest are cut off one byte short: the client never
    receives a whole corrupt blob from a pass-through."""
    mirror = await make_mirror(cache_max_bytes=str(LIMIT))
    data = _payload(LIMIT + 1, seed=3)
    digest = fake.add_blob(data)
    fake.faults[digest] = "wrong_bytes"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_fill_without_room_beside_other_reservations_is_streamed_whole(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """While a stalled fill holds 600 KB of a 1 MiB cache, a second 600 KB blob gets no room
    (cache_full): its client gets it whole from upstream, and it is not stored."""
    mirror = await make_mirror(cache_max_bytes=str(LIMIT))
    held = fake.add_blob(_payload(600 * KB, seed=20))
    fake.faults[held] = "stall_midway"
    data = _payload(600 * KB, seed=21)
    digest = fake.add_blob(data)
    stalled = asyncio.create_task(mirror.get(f"/v2/library/x/blobs/{held}"))
    await eventually(lambda: _room(mirror).reserved == 600 * KB)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert await _metric(mirror, 'mirror_blob_passthrough_total{reason="cache_full"}') == 1
    assert not await stored(mirror, digest)
    fake.release.set()
    assert len(await (await stalled).read()) == 600 * KB


async def test_broken_pass_through_is_resumed_with_range(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """An upstream body cut off half-way through a pass-through is resumed from where it broke: the
    client gets the whole blob, verified."""
    mirror = await make_mirror(cache_max_bytes=str(LIMIT))
    data = _payload(LIMIT + 1, seed=5)
    digest = fake.add_blob(data)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data  # now known too large
    fake.faults[digest] = "truncate_once"  # the next reader's stream (no fill first) breaks half-way
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert await _metric(mirror, "mirror_fill_resumes_total") == 1


async def test_dripping_pass_through_is_cut_off(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """A pass-through whose upstream sends fewer than fill_min_bytes in fill_min_window (while the
    client waits) ends the client's connection instead of holding it for ever."""
    mirror = await make_mirror(cache_max_bytes=str(LIMIT), fill_min_bytes=1000, fill_min_window=0.3)
    digest = fake.add_blob(_payload(LIMIT + 1, seed=6))
    fake.faults[digest] = "drip"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_failed_fill_gives_its_reservation_back(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """A fill that fails (its bytes do not hash to the digest) releases the room it reserved."""
    mirror = await make_mirror(cache_max_bytes=str(LIMIT))
    digest = fake.add_blob(_payload(300 * KB, seed=7))
    fake.faults[digest] = "wrong_bytes"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    await eventually(lambda: _room(mirror).reserved == 0)
    assert await _metric(mirror, "mirror_cache_reserved_bytes") == 0
    assert await _metric(mirror, 'mirror_fill_failures_total{reason="digest_mismatch"}') == 1
