"""The bounded cache: LRU eviction between watermarks, pins, blobs in use, start-up integrity."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import keys
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
KIB = 1024
LIMIT = {"cache_max_bytes": 1000 * KIB, "cache_high_watermark": 0.95, "cache_low_watermark": 0.9}


def blob(fake: FakeUpstream, seed: int, size: int = 300 * KIB) -> str:
    return fake.add_blob(random.Random(seed).randbytes(size))


async def pull(mirror: Client, digest: str, name: str = "library/x") -> bytes:
    body = await (await mirror.get(f"/v2/{name}/blobs/{digest}")).read()
    await eventually(lambda: stored(mirror, digest))
    return body


async def in_store(mirror: Client, *digests: str) -> list[bool]:
    return [await stored(mirror, d) for d in digests]


async def test_lru_blobs_are_evicted_down_to_the_low_watermark(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Past the high watermark the least recently used blobs go, until the store is under the low one."""
    mirror = await make_mirror(**LIMIT)
    a, b, c, d = (blob(fake, seed) for seed in range(4))
    for digest in (a, b, c):
        await pull(mirror, digest)
    await pull(mirror, a)  # a is used again: b is now the least recently used
    await pull(mirror, d)
    await eventually(lambda: _metrics_show(mirror, "mirror_cache_evictions_total 1.0"))
    assert await in_store(mirror, a, b, c, d) == [True, False, True, True]
    assert await _metrics_show(mirror, f"mirror_cache_evicted_bytes_total {300 * KIB}.0")
    again = await pull(mirror, b)
    assert again == fake.blobs[b]


async def _metrics_show(mirror: Client, sample: str) -> bool:
    return sample in await (await mirror.get("/metrics")).text()


async def _evicted(mirror: Client, digest: str) -> bool:
    return not await stored(mirror, digest)


async def test_pinned_image_is_warmed_at_start_and_never_evicted(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """A pinned image is pulled in the background at start-up and survives eviction as the LRU entry."""
    pinned = blob(fake, 10)
    fake.add_manifest("library/app", "1", [pinned])
    mirror = await make_mirror(config='pins = ["app:1"]\n', **LIMIT)
    await eventually(lambda: stored(mirror, pinned))
    others = [blob(fake, seed) for seed in range(3)]
    for digest in others:
        await pull(mirror, digest)
    await eventually(lambda: _evicted(mirror, others[0]))
    assert await stored(mirror, pinned)
    text = await (await mirror.get("/metrics")).text()
    assert f"mirror_cache_pinned_bytes {300 * KIB}.0" in text
    assert await asyncio.to_thread((tmp_path / "cache" / "pins.json").exists)


async def test_blob_being_read_is_not_evicted_under_its_reader(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A cached blob a client is still reading (larger than the socket buffers) is skipped by eviction,
    though least recently used, and arrives intact."""
    mib = 1024 * KIB
    mirror = await make_mirror(cache_max_bytes=20 * mib, cache_high_watermark=0.95, cache_low_watermark=0.9)
    first = blob(fake, 20, 16 * mib)
    await pull(mirror, first)
    reading = await mirror.get(f"/v2/library/x/blobs/{first}")
    start = await reading.content.readexactly(1024)
    later = [blob(fake, seed, 2 * mib) for seed in (21, 22)]
    for digest in later:
        await pull(mirror, digest)
    await eventually(lambda: _evicted(mirror, later[0]))
    assert await stored(mirror, first)
    assert start + await reading.read() == fake.blobs[first]


async def test_startup_drops_index_rows_whose_files_changed(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """A truncated or deleted blob file is dropped from the index by the start-up pass, which runs in
    the background; a request before it gets the right bytes all the same."""
    mirror = await make_mirror()
    truncated, deleted, intact = (blob(fake, seed, 1000) for seed in range(30, 33))
    paths = {}
    for digest in (truncated, deleted, intact):
        await pull(mirror, digest)
        found = await asyncio.to_thread(mirror.app[keys.STORE].open, digest)
        assert found is not None
        paths[digest] = Path(found.file.name)
        found.close()
    await mirror.close()
    await asyncio.to_thread(_truncate, paths[truncated])
    await asyncio.to_thread(paths[deleted].unlink)
    reopened = await make_mirror()
    assert await (await reopened.get(f"/v2/library/x/blobs/{deleted}")).read() == fake.blobs[deleted]

    async def dropped() -> bool:
        return await in_store(reopened, truncated) == [False]

    await eventually(dropped)
    assert await in_store(reopened, intact) == [True]
    assert await (await reopened.get(f"/v2/library/x/blobs/{truncated}")).read() == fake.blobs[truncated]


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(10)
