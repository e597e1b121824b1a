"""The cache heals: a stored blob is re-hashed on its first serve after start-up (its last byte held
back until the digest matched) and by a background scrubber at a bounded rate; a blob whose bytes
rotted is dropped, its client cut short, and fetched again from upstream on the next request."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import keys
from mirror.cluster import peerauth
from mirror.storage.blobs import BlobStore
from mirror.storage.scrubber import Scrubber
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually
from tests.support.redis import RedisServer
from tests.support.store import put_blob

Client = TestClient[web.Request, web.Application]
MIB = 1024 * 1024
BLOB = 8 * MIB
FLIP_AT = 5 * MIB  # inside the blob, past any small Range the tests ask for


def _blob(seed: int, size: int = BLOB) -> bytes:
    return (bytes(range(seed, 256)) + bytes(range(seed))) * (size // 256)


def _store_flipped(cache: Path, blobs: list[bytes], flip: set[int]) -> list[str]:
    """Commit `blobs` into the store under `cache` as an earlier run of the mirror would have (so this
    run has verified none of them), flipping one byte in those whose index is in `flip`. Blocking."""
    store = BlobStore(cache)
    store.recover()
    digests = []
    try:
        for index, data in enumerate(blobs):
            digest = put_blob(store, data)
            digests.append(digest)
            if index in flip:
                found = store.open(digest)
                assert found is not None
                assert found.where is not None
                found.close()
                _flip(found.where.path)
    finally:
        store.close()
    return digests


async def stored_with(tmp_path: Path, fake: FakeUpstream, blobs: list[bytes], flip: set[int]) -> list[str]:
    digests = await asyncio.to_thread(_store_flipped, tmp_path / "cache", blobs, flip)
    for data in blobs:
        fake.add_blob(data)  # upstream has the right bytes
    return digests


async def read_all(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body as far as it came, and whether it came whole."""
    got = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(MIB):
            got += chunk
    except aiohttp.ClientPayloadError:
        return bytes(got), False
    return bytes(got), True


async def sample(mirror: Client, name: str, by: str) -> float:
    text = await (await mirror.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(f'{name}{{by="{by}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_flipped_byte_is_cut_short_dropped_and_fetched_again(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """One byte flipped inside a stored 8 MiB blob: its first serve is cut short (never the whole
    wrong body), the entry is dropped and counted, and the next request gets the right bytes from
    upstream as a cold miss."""
    data = _blob(1)
    (digest,) = await stored_with(tmp_path, fake, [data], flip={0})
    mirror = await make_mirror(scrub_rate=0)
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    body, whole = await read_all(resp)
    assert not whole
    assert len(body) < BLOB
    assert not await stored(mirror, digest)
    assert await sample(mirror, "mirror_blob_corrupt_total", "serve") == 1
    again = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert await again.read() == data
    assert len(fake.requests("GET", "/blobs/")) == 1  # the refetch; the first serve came from the store


async def test_intact_blob_is_verified_once_then_served_without_rehash(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """An intact stored blob's first serve re-hashes it and sends it whole; later serves go the plain
    fast path (no more bytes re-hashed)."""
    data = _blob(2)
    (digest,) = await stored_with(tmp_path, fake, [data], flip=set())
    mirror = await make_mirror(scrub_rate=0)
    for _ in range(3):
        assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert await sample(mirror, "mirror_blob_rehashed_bytes_total", "serve") == BLOB
    assert fake.requests("GET", "/blobs/") == []


async def test_concurrent_first_serves_share_one_rehash(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """Five clients asking at once for a blob not verified since start-up all get it whole, and the
    blob is hashed once, not five times."""
    data = _blob(3)
    (digest,) = await stored_with(tmp_path, fake, [data], flip=set())
    mirror = await make_mirror(scrub_rate=0)

    async def get() -> bytes:
        return await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read()

    assert await asyncio.gather(*(get() for _ in range(5))) == [data] * 5
    assert await sample(mirror, "mirror_blob_rehashed_bytes_total", "serve") == BLOB


async def test_a_client_that_hangs_up_leaves_the_rehash_to_finish(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """A first serve whose client hangs up after the headers still completes its re-hash: the blob is
    then verified, and its next serve needs none."""
    data = _blob(14)
    (digest,) = await stored_with(tmp_path, fake, [data], flip=set())
    mirror = await make_mirror(scrub_rate=0)
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    resp.close()

    async def verified() -> bool:
        return await sample(mirror, "mirror_blob_rehashed_bytes_total", "serve") == BLOB

    await eventually(verified)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert await sample(mirror, "mirror_blob_rehashed_bytes_total", "serve") == BLOB


async def test_range_of_unverified_corrupt_blob_is_cut_short(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """A Range of a blob not verified since start-up waits for the whole blob's hash before its last
    byte: a corrupt blob's 206 is cut one byte short (even though the flipped byte lies outside the
    range) and the blob dropped; an intact one's 206 comes whole."""
    corrupt, intact = await stored_with(tmp_path, fake, [_blob(4), _blob(5)], flip={0})
    mirror = await make_mirror(scrub_rate=0)
    resp = await mirror.get(f"/v2/library/x/blobs/{corrupt}", headers={"Range": "bytes=0-99"})
    assert resp.status == 206
    body, whole = await read_all(resp)
    assert not whole
    assert len(body) < 100
    assert not await stored(mirror, corrupt)
    good = await mirror.get(f"/v2/library/x/blobs/{intact}", headers={"Range": "bytes=0-99"})
    assert (good.status, await good.read()) == (206, _blob(5)[:100])


async def test_scrubber_drops_a_flipped_byte_nobody_requests(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """The background scrubber finds the flipped byte in a blob no client asks for, drops and counts
    it, and marks the intact blob verified, whose serve then needs no re-hash."""
    corrupt, intact = await stored_with(tmp_path, fake, [_blob(6), _blob(7)], flip={0})
    mirror = await make_mirror(scrub_rate="1G")

    async def scrubbed() -> bool:
        return await sample(mirror, "mirror_blob_rehashed_bytes_total", "scrub") == 2 * BLOB

    await eventually(scrubbed)
    assert not await stored(mirror, corrupt)
    assert await stored(mirror, intact)
    assert await sample(mirror, "mirror_blob_corrupt_total", "scrub") == 1
    assert await (await mirror.get(f"/v2/library/x/blobs/{intact}")).read() == _blob(7)
    assert await sample(mirror, "mirror_blob_rehashed_bytes_total", "serve") == 0


async def test_scrubber_keeps_to_its_rate(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """A pass re-hashing 2 MiB at 4 MiB/s is held back by its pace (which accounts every byte and the
    waits it imposed), not run at disk speed."""
    await stored_with(tmp_path, fake, [_blob(8, MIB), _blob(9, MIB)], flip=set())
    mirror = await make_mirror(scrub_rate=0)
    scrubber = Scrubber(mirror.app[keys.STORE], mirror.app[keys.VERIFIER], rate=4 * MIB)
    done = await scrubber.scrub(skip_verified=True)
    assert (done.checked, done.corrupt, done.bytes) == (2, 0, 2 * MIB)
    assert scrubber.pace.bytes == 2 * MIB
    assert scrubber.pace.waits >= 1
    assert scrubber.pace.waited > 0


async def test_later_pass_finds_rot_in_a_verified_blob(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """The first pass skips blobs verified since start-up; a later pass re-hashes them too, and finds
    a byte that rotted after the blob was verified."""
    data = _blob(10)
    mirror = await make_mirror(scrub_rate=0)
    digest = fake.add_blob(data)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    await eventually(lambda: stored(mirror, digest))  # committed by its fill: verified
    store = mirror.app[keys.STORE]
    found = await asyncio.to_thread(store.open, digest)
    assert found is not None
    assert found.where is not None
    assert found.verified
    found.close()
    await asyncio.to_thread(_flip, found.where.path)
    scrubber = Scrubber(store, mirror.app[keys.VERIFIER], rate=1024 * MIB)
    first = await scrubber.scrub(skip_verified=True)
    assert (first.checked, first.skipped) == (0, 1)
    later = await scrubber.scrub(skip_verified=False)
    assert (later.checked, later.corrupt) == (1, 1)
    assert not await stored(mirror, digest)


async def test_passes_follow_one_another_every_scrub_interval(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """The scrubber's loop starts the next pass once the interval since the last one began is over
    (here 0 s): the second pass re-hashes the blob the first one verified."""
    await stored_with(tmp_path, fake, [_blob(15, MIB)], flip=set())
    mirror = await make_mirror(scrub_rate=0)
    scrubber = Scrubber(mirror.app[keys.STORE], mirror.app[keys.VERIFIER], rate=1024 * MIB, every=0.0)
    running = asyncio.create_task(scrubber.run())
    try:
        await eventually(lambda: scrubber.passes >= 2)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert scrubber.pace.bytes >= 2 * MIB


def _flip(path: Path) -> None:
    with path.open("r+b") as file:
        file.seek(FLIP_AT)
        byte = file.read(1)
        file.seek(FLIP_AT)
        file.write(bytes([byte[0] ^ 0xFF]))
        os.fsync(file.fileno())


async def test_shutdown_drains_the_scrubber(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """Closing the mirror while the scrubber waits on its pace mid-blob cancels it and its re-hash:
    no task and no descriptor is left behind."""
    await stored_with(tmp_path, fake, [_blob(11)], flip=set())
    mirror = await make_mirror(scrub_rate=1024)  # 1 KiB/s: the first 1 MiB chunk waits over ten minutes

    async def scrubbing() -> bool:
        return await sample(mirror, "mirror_blob_rehashed_bytes_total", "scrub") > 0

    await eventually(scrubbing)
    assert await asyncio.to_thread(_open_blob_files) != []
    await mirror.close()
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("scrubber", "rehash"))]
    assert left == []
    assert await asyncio.to_thread(_open_blob_files) == []


def _open_blob_files() -> list[str]:
    """Blob files this process has open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.endswith(".val"):
            found.append(target)
    return found


async def test_a_peer_is_cut_short_on_a_corrupt_stored_blob_too(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path, redis_server: RedisServer
) -> None:
    """In the shared mode, a replica asked by a peer for a stored blob it has not verified since
    start-up re-hashes it the same way: a corrupt one reaches the peer cut short and is dropped."""
    (digest,) = await stored_with(tmp_path, fake, [_blob(13)], flip={0})
    secret = "healing-peer-secret-0123456"
    mirror = await make_mirror(
        scrub_rate=0, redis_url=redis_server.url, advertise_url="http://127.0.0.1:1", peer_secret=secret
    )
    path = f"/_mirror/peer/blobs/{digest}"
    signed = {peerauth.HEADER: peerauth.sign(secret, "GET", path, "", time.time())}
    resp = await mirror.get(path, headers=signed)
    assert resp.status == 200
    body, whole = await read_all(resp)
    assert not whole
    assert len(body) < BLOB
    assert not await stored(mirror, digest)


@pytest.mark.parametrize("value", ["0", 0])
async def test_scrub_rate_zero_turns_the_scrubber_off(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path, value: object
) -> None:
    """`scrub_rate = 0` starts no scrubber: a corrupt blob nobody asks for stays until it is served."""
    (digest,) = await stored_with(tmp_path, fake, [_blob(12, MIB)], flip=set())
    mirror = await make_mirror(scrub_rate=value)
    assert mirror.app[keys.SETTINGS].scrub_rate == 0
    names = [t.get_name() for t in asyncio.all_tasks()]
    assert "scrubber" not in names
    assert await stored(mirror, digest)
