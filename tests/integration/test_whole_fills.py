"""Small cold blobs read whole with their headers (`fill_memory_bytes`): served from memory and stored
in one step, up to the limit and not a byte past it; wrong bytes refused before any header; one
upstream GET for many clients; room made by eviction first; served whole when the cache has no room
or the disk write fails; a body that pauses after its headers streamed the usual way (in-process
mirror, fake upstream on a real socket)."""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import MutableMapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from mirror import keys
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
LIMIT = 10_000  # fill_memory_bytes in these tests


def payload(size: int, seed: int = 17) -> bytes:
    return random.Random(seed).randbytes(size)


async def metric(mirror: Client, sample: str) -> float:
    text = await (await mirror.get("/metrics")).text()
    found = [line for line in text.splitlines() if line.startswith(sample + " ")]
    return float(found[0].split()[1]) if found else 0.0


async def blob_requests(mirror: Client, result: str) -> float:
    """Blob GETs counted in `mirror_requests_total` with that `result`."""
    text = await (await mirror.get("/metrics")).text()
    wanted = ("mirror_requests_total{", 'kind="blob"', f'result="{result}"')
    lines = [line for line in text.splitlines() if line.startswith(wanted[0])]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if all(w in line for w in wanted[1:]))


async def committed(logs: list[MutableMapping[str, Any]], digest: str) -> MutableMapping[str, Any]:
    """The fill's `blob_fill_committed` line, once it is logged (just after the blob is stored)."""

    def found() -> list[MutableMapping[str, Any]]:
        return [e for e in logs if e["event"] == "blob_fill_committed" and e["digest"] == digest]

    await eventually(lambda: bool(found()))
    return found()[0]


async def test_a_blob_of_fill_memory_bytes_is_kept_in_memory_and_one_byte_more_is_not(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A cold blob exactly `fill_memory_bytes` long is served and stored from memory; one a byte
    longer goes through a temp file; both come whole and are stored."""
    mirror = await make_mirror(fill_memory_bytes=str(LIMIT))
    small, large = payload(LIMIT, 1), payload(LIMIT + 1, 2)
    digests = [fake.add_blob(small), fake.add_blob(large)]
    with capture_logs() as logs:
        for digest, data in zip(digests, (small, large), strict=True):
            resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
            assert resp.status == 200
            assert await resp.read() == data
            await eventually(lambda d=digest: stored(mirror, d))  # type: ignore[misc]
        assert (await committed(logs, digests[0])).get("in_memory") is True
        assert "in_memory" not in await committed(logs, digests[1])


async def test_fill_memory_bytes_zero_keeps_nothing_in_memory(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """`fill_memory_bytes = 0` turns the small-body path off: a 100-byte blob goes through a temp file."""
    mirror = await make_mirror(fill_memory_bytes="0")
    data = payload(100)
    digest = fake.add_blob(data)
    with capture_logs() as logs:
        assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
        assert "in_memory" not in await committed(logs, digest)


async def test_a_small_blob_with_wrong_bytes_is_refused_before_its_headers(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Bytes that do not hash to the digest: the client gets a 502 with registry error JSON, not a
    body, and nothing is stored."""
    mirror = await make_mirror(fill_memory_bytes=str(LIMIT))
    digest = fake.add_blob(payload(5000))
    fake.faults[digest] = "wrong_bytes"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 502
    assert (await resp.json())["errors"][0]["code"]
    assert await metric(mirror, 'mirror_fill_failures_total{reason="digest_mismatch"}') == 1
    assert not await stored(mirror, digest)


async def test_many_clients_of_one_small_cold_blob_cost_one_upstream_get(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Twenty clients asking at once for a small cold blob (its headers held back upstream until all
    have joined) get it whole from one upstream GET: one miss and nineteen coalesced, although the
    blob is stored before any of them is answered."""
    mirror = await make_mirror(fill_memory_bytes=str(LIMIT))
    data = payload(3000)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_headers"
    gets = [asyncio.create_task(mirror.get(f"/v2/library/x/blobs/{digest}")) for _ in range(20)]
    await eventually(lambda: (f := mirror.app[keys.FILLS].get(digest)) is not None and f.joined == 20)
    fake.release.set()
    for get in gets:
        assert await (await get).read() == data
    assert len(fake.requests("GET", "/blobs/")) == 1
    assert (await blob_requests(mirror, "miss"), await blob_requests(mirror, "coalesced")) == (1, 19)


async def test_a_small_blob_without_room_is_served_from_memory_and_not_stored(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A small blob larger than cache_max_bytes: its first reader gets it whole from memory, counted
    as not stored (too_large); the next one is streamed from upstream; it is never stored."""
    mirror = await make_mirror(fill_memory_bytes=str(LIMIT), cache_max_bytes="4096")
    data = payload(5000)
    digest = fake.add_blob(data)
    for count in (1, 2):
        assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
        assert await metric(mirror, 'mirror_blob_passthrough_total{reason="too_large"}') == count
    assert not await stored(mirror, digest)
    room = mirror.app[keys.FILLS]._room
    assert room is not None
    assert room.reserved == 0


async def test_a_small_blob_whose_write_fails_is_served_and_gives_its_room_back(
    fake: FakeUpstream, make_mirror: MirrorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file cannot be written (disk full): the reader still gets the whole blob, its
    reservation is given back, and it is counted as not stored (disk_full)."""
    mirror = await make_mirror(fill_memory_bytes=str(LIMIT))
    store = mirror.app[keys.STORE]

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write_temp", disk_full)
    data = payload(5000)
    digest = fake.add_blob(data)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert await metric(mirror, 'mirror_blob_passthrough_total{reason="disk_full"}') == 1
    room = mirror.app[keys.FILLS]._room
    assert room is not None
    assert room.reserved == 0
    assert not await stored(mirror, digest)


async def test_a_small_body_that_pauses_after_its_headers_is_streamed_and_stored(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Half the body, then a pause (longer than EARLY_WAIT): the client gets its headers during the
    pause, the fill goes on through a temp file once the rest comes, and the blob is right."""
    mirror = await make_mirror(fill_memory_bytes=str(LIMIT))
    data = payload(8000)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_midway"
    with capture_logs() as logs:
        resp = await asyncio.wait_for(mirror.get(f"/v2/library/x/blobs/{digest}"), 10)
        assert resp.status == 200
        fake.release.set()
        assert await resp.read() == data
        assert "in_memory" not in await committed(logs, digest)
    assert await stored(mirror, digest)


async def test_a_small_blob_that_needs_room_evicts_first_and_is_stored(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """With three 5,000-byte blobs stored in a 16 KiB cache, a fourth small cold blob evicts the least
    recently used before it is written: it is stored and the store stays within cache_max_bytes."""
    mirror = await make_mirror(fill_memory_bytes=str(LIMIT), cache_max_bytes="16384")
    blobs = {fake.add_blob(payload(5000, seed)): payload(5000, seed) for seed in range(4)}
    for digest, data in blobs.items():
        assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
        await eventually(lambda d=digest: stored(mirror, d))  # type: ignore[misc]
    first, *_, last = blobs
    assert await stored(mirror, last)
    assert not await stored(mirror, first)
    room = mirror.app[keys.FILLS]._room
    assert room is not None
    assert await asyncio.to_thread(room.used) <= 16384
    assert await metric(mirror, "mirror_cache_evictions_total") >= 1
