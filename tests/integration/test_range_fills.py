"""Range-first cold fills: a reader far ahead of a cold fill's front gets its window from a second,
ranged upstream stream, while the main stream still hashes every byte in order and fetches none twice."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable

import pytest
from aiohttp import ClientResponse

from mirror import keys
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.integration.test_capacity import sample
from tests.integration.test_fills import Client, payload, written
from tests.integration.test_shared import _shared
from tests.support.polling import eventually
from tests.support.redis import RedisServer

MIB = 1024 * 1024
SIZE = 32 * MIB  # a "large" blob, scaled down so that a paced download takes about a second
RATE = 32 * MIB  # bytes per second per upstream stream
AHEAD = SIZE * 9 // 10  # where the far reader starts: 90 % into the blob
WINDOW = MIB  # how much it reads
FRONT = 2 * MIB  # where the main stream is held while the far reader asks


def blob_url(digest: str) -> str:
    return f"/v2/library/x/blobs/{digest}"


def ranges_asked(fake: FakeUpstream) -> list[str | None]:
    return [seen.headers.get("Range") for seen in fake.requests("GET", "/blobs/")]


async def held_fill(fake: FakeUpstream, mirror: Client, data: bytes) -> tuple[str, ClientResponse]:
    """A cold fill of `data` whose main stream is held at FRONT bytes (its upstream stalls there)."""
    digest = fake.add_blob(data)
    fake.rate = RATE
    fake.stall_after[digest] = FRONT
    return digest, await mirror.get(blob_url(digest))


async def read_range(mirror: Client, digest: str, start: int, length: int) -> bytes:
    resp = await mirror.get(blob_url(digest), headers={"Range": f"bytes={start}-{start + length - 1}"})
    assert resp.status == 206
    return await resp.read()


async def test_a_far_range_is_served_by_a_side_stream_and_no_byte_is_fetched_twice(
    fake: FakeUpstream, mirror: Client
) -> None:
    """A Range at 90 % of a cold fill is answered while the upstream has sent a fraction of the blob;
    the blob commits verified and the upstream sent each byte once."""
    data = payload(SIZE)
    digest, whole = await held_fill(fake, mirror, data)
    await eventually(lambda: written(mirror, digest) == FRONT)
    assert await read_range(mirror, digest, AHEAD, WINDOW) == data[AHEAD : AHEAD + WINDOW]
    assert fake.sent[digest] < AHEAD  # answered before the main stream could have got there
    assert await whole.read() == data
    await eventually(lambda: stored(mirror, digest))
    assert fake.sent[digest] == SIZE
    assert ranges_asked(fake) == [
        None,
        f"bytes={AHEAD}-{AHEAD + WINDOW - 1}",  # the side stream, for the far reader
        f"bytes={FRONT}-{AHEAD - 1}",  # the main stream, cut and re-opened short of the window
        f"bytes={AHEAD + WINDOW}-",  # ... and after it, once it has hashed the window from the file
    ]
    assert await sample(mirror, "mirror_fill_range_streams_total", '{result="started"}') == 1
    assert await sample(mirror, "mirror_fill_range_bytes_total") == WINDOW
    resp = await mirror.get(blob_url(digest))
    assert hashlib.sha256(await resp.read()).hexdigest() == digest.removeprefix("sha256:")


async def test_a_cold_range_request_alone_gets_its_bytes_early(fake: FakeUpstream, mirror: Client) -> None:
    """A Range at 90 % that itself starts the cold fill is answered long before the front gets there,
    and the fill still commits the whole blob, verified."""
    data = payload(SIZE)
    digest = fake.add_blob(data)
    fake.rate = RATE
    assert await read_range(mirror, digest, AHEAD, WINDOW) == data[AHEAD : AHEAD + WINDOW]
    assert fake.sent[digest] < AHEAD
    await eventually(lambda: stored(mirror, digest))
    resp = await mirror.get(blob_url(digest))
    assert await resp.read() == data


async def test_a_range_covering_the_last_byte_waits_for_verification(
    fake: FakeUpstream, mirror: Client
) -> None:
    """A side stream's window that ends the blob is sent only once the main stream verified it all."""
    data = payload(SIZE)
    digest, whole = await held_fill(fake, mirror, data)
    await eventually(lambda: written(mirror, digest) == FRONT)
    tail = await mirror.get(blob_url(digest), headers={"Range": f"bytes={AHEAD}-"})
    assert tail.status == 206
    assert await tail.content.readexactly(SIZE - AHEAD - 1) == data[AHEAD:-1]
    fill = mirror.app[keys.FILLS].get(digest)
    assert fill is not None
    assert not fill.verified  # the last byte is present but held back
    assert await tail.read() == data[-1:]
    assert fill.verified
    assert await whole.read() == data


async def test_a_failing_side_stream_is_covered_by_the_main_stream(
    fake: FakeUpstream, mirror: Client
) -> None:
    """A side stream cut off half-way keeps what it brought; the main stream fetches the rest, once."""
    data = payload(SIZE)
    digest, whole = await held_fill(fake, mirror, data)
    fake.cut_range_at[digest] = AHEAD
    await eventually(lambda: written(mirror, digest) == FRONT)
    assert await read_range(mirror, digest, AHEAD, WINDOW) == data[AHEAD : AHEAD + WINDOW]
    assert await whole.read() == data
    await eventually(lambda: stored(mirror, digest))
    assert await sample(mirror, "mirror_fill_range_streams_total", '{result="failed"}') == 1
    assert fake.sent[digest] == SIZE  # the half it brought was not fetched again
    assert ranges_asked(fake)[-1] == f"bytes={AHEAD + WINDOW // 2}-"


async def test_a_side_stream_the_upstream_answers_whole_is_dropped(
    fake: FakeUpstream, mirror: Client
) -> None:
    """An upstream ignoring Range (200) gets no side stream: the far reader is served by the main stream."""
    data = payload(SIZE)
    digest = fake.add_blob(data)
    fake.faults[digest] = "ignore_range"
    fake.rate = RATE
    assert await read_range(mirror, digest, AHEAD, WINDOW) == data[AHEAD : AHEAD + WINDOW]
    await eventually(lambda: stored(mirror, digest))
    assert await sample(mirror, "mirror_fill_range_streams_total", '{result="refused"}') == 1
    assert await sample(mirror, "mirror_fill_range_streams_total", '{result="started"}') == 0
    assert await (await mirror.get(blob_url(digest))).read() == data


@pytest.mark.parametrize("limit", ["fill_range_streams", "fill_range_streams_total"])
async def test_past_the_stream_limit_a_far_reader_waits_for_a_free_stream(
    fake: FakeUpstream, make_mirror: MirrorFactory, limit: str
) -> None:
    """With the per-blob (or overall) limit of side streams taken, a second far reader gets none; it
    gets one once the first side stream ends."""
    mirror = await make_mirror(**{limit: 1, "fill_range_gap": MIB})
    data = payload(SIZE)
    digest, whole = await held_fill(fake, mirror, data)
    fake.stall_range_at[digest] = AHEAD  # the side stream, once answered, holds its place
    await eventually(lambda: written(mirror, digest) == FRONT)
    first = await mirror.get(blob_url(digest), headers={"Range": f"bytes={AHEAD}-"})
    started = '{result="started"}'
    await eventually(lambda: _equals(sample(mirror, "mirror_fill_range_streams_total", started), 1))
    second = SIZE * 3 // 4  # far ahead of the front, before the first reader's window
    far = asyncio.ensure_future(read_range(mirror, digest, second, WINDOW))
    await eventually(
        lambda: _equals(sample(mirror, "mirror_fill_range_streams_total", '{result="limited"}'), 1)
    )
    fake.release.set()
    assert await far == data[second : second + WINDOW]
    assert await first.read() == data[AHEAD:]
    assert await whole.read() == data
    assert await sample(mirror, "mirror_fill_range_streams_total", started) == 2
    assert await sample(mirror, "mirror_fill_range_streams_total", '{result="limited"}') == 1


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return await value == expected


async def test_no_side_stream_for_a_range_near_the_front(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A reader less than `fill_range_gap` beyond the front waits for the main stream: one request."""
    mirror = await make_mirror(fill_range_gap=SIZE)
    data = payload(SIZE)
    digest = fake.add_blob(data)
    fake.rate = RATE
    assert await read_range(mirror, digest, AHEAD, WINDOW) == data[AHEAD : AHEAD + WINDOW]
    assert ranges_asked(fake) == [None]


async def test_in_the_shared_mode_the_filling_replica_takes_side_streams_from_upstream(
    fake: FakeUpstream, make_mirror: MirrorFactory, redis_server: RedisServer
) -> None:
    """A replica holding a blob's fill lease fetches a far reader's window from the upstream too."""
    mirror = await make_mirror(**_shared(redis_server))
    data = payload(SIZE)
    digest, whole = await held_fill(fake, mirror, data)
    await eventually(lambda: written(mirror, digest) == FRONT)
    assert await read_range(mirror, digest, AHEAD, WINDOW) == data[AHEAD : AHEAD + WINDOW]
    assert await whole.read() == data
    assert await sample(mirror, "mirror_fill_range_streams_total", '{result="started"}') == 1
    assert fake.sent[digest] == SIZE


async def test_over_the_event_loop_transport_streams_are_cut_and_joined_alike(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """With every transfer thread taken, the main and side streams go over the session: the cut main
    stream counts every byte it hashed, so the blob still commits verified, each byte fetched once."""
    mirror = await make_mirror(max_transfers=1, shutdown_grace=0)
    other = fake.add_blob(payload(MIB, seed=9))
    fake.stall_after[other] = MIB // 2  # holds the one transfer thread
    await mirror.get(blob_url(other))
    await eventually(lambda: written(mirror, other) == MIB // 2)
    data = payload(SIZE)
    digest, whole = await held_fill(fake, mirror, data)
    await eventually(lambda: written(mirror, digest) == FRONT)
    assert await read_range(mirror, digest, AHEAD, WINDOW) == data[AHEAD : AHEAD + WINDOW]
    assert await whole.read() == data
    await eventually(lambda: stored(mirror, digest))
    assert fake.sent[digest] == SIZE
    assert await sample(mirror, "mirror_blob_transfers_total", '{transport="session"}') == 4
