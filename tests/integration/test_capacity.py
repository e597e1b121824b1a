"""Transfer capacity that never starves and fills that always end: abandoned downloads bounded, blobs
past the transfer threads still served, drips and hangs ended, any failure answered to every reader."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from mirror import keys, oci, resumes
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
ACCEPT = {"Accept": oci.OCI_MANIFEST}
#: Seconds within which something must happen that the bug made wait for a minute or for ever.
PROMPTLY = 10.0


async def sample(mirror: Client, name: str, labels: str = "") -> float:
    """A metric's value from /metrics (0 when absent)."""
    text = await (await mirror.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def hang_up_after_headers(mirror: Client, digest: str) -> None:
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    resp.close()


async def test_abandoned_fills_past_the_count_are_stopped(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Six cold blobs whose clients hang up after the headers: two run on (abandoned_fills), four are
    stopped at once, so hung-up requests cannot make the mirror download without bound."""
    mirror = await make_mirror(abandoned_fills=2, shutdown_grace=0)
    digests = [fake.add_blob(bytes([n]) * 2_000_000) for n in range(6)]
    for digest in digests:
        fake.faults[digest] = "stall_midway"
    for digest in digests:
        await hang_up_after_headers(mirror, digest)
    await eventually(lambda: len(mirror.app[keys.FILLS]._fills) == 2, PROMPTLY)
    labels = '{reason="abandoned"}'
    assert await sample(mirror, "mirror_fill_failures_total", labels) == 4


async def test_abandoned_fills_past_the_byte_budget_are_stopped(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """An abandoned fill with more left to download than abandoned_fill_bytes is stopped."""
    mirror = await make_mirror(abandoned_fill_bytes=1_000_000, shutdown_grace=0)
    digest = fake.add_blob(b"z" * 3_000_000)
    fake.faults[digest] = "stall_midway"
    await hang_up_after_headers(mirror, digest)
    await eventually(lambda: not mirror.app[keys.FILLS]._fills, PROMPTLY)
    assert await sample(mirror, "mirror_fill_failures_total", '{reason="abandoned"}') == 1


async def test_a_fill_whose_readers_had_every_byte_is_committed_whatever_the_budget(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A client that leaves once it has the whole blob, while the commit still runs, costs the fill
    nothing more to download: it is stored, never stopped as abandoned (even with no budget at all)."""
    mirror = await make_mirror(abandoned_fills=0, shutdown_grace=0)
    blobs = {fake.add_blob(bytes([n]) * 2_000_000): bytes([n]) * 2_000_000 for n in range(12)}
    for digest, data in blobs.items():
        assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    await eventually(lambda: not mirror.app[keys.FILLS]._fills, PROMPTLY)
    assert await sample(mirror, "mirror_fill_failures_total", '{reason="abandoned"}') == 0
    for digest in blobs:
        assert await stored(mirror, digest)


async def test_cold_blob_past_max_transfers_gets_headers_and_bytes(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """With both transfer threads held by stalled downloads, a third cold blob gets its headers at once
    and all its bytes, over the session transport."""
    mirror = await make_mirror(max_transfers=2, shutdown_grace=0)
    stalled = [fake.add_blob(bytes([n]) * 2_000_000) for n in range(2)]
    readers = []
    for digest in stalled:
        fake.faults[digest] = "stall_midway"
        readers.append(await mirror.get(f"/v2/library/x/blobs/{digest}"))
    data = bytes(range(256)) * 8000
    digest = fake.add_blob(data)
    resp = await asyncio.wait_for(mirror.get(f"/v2/library/x/blobs/{digest}"), PROMPTLY)
    assert resp.status == 200
    assert await asyncio.wait_for(resp.read(), PROMPTLY) == data
    assert await sample(mirror, "mirror_blob_transfers_total", '{transport="session"}') == 1
    assert await sample(mirror, "mirror_blob_transfers_total", '{transport="threaded"}') == 2
    for reader in readers:
        reader.close()


async def test_drip_feeding_upstream_ends_the_fill(
    fake: FakeUpstream, make_mirror: MirrorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream sending a byte every 50 ms (under every read timeout) breaks the minimum-throughput
    rule: the body is resumed MAX_RESUMES times, then the fill fails and its reader is cut off."""
    monkeypatch.setattr(resumes, "RESUME_BACKOFF", 0.01)
    mirror = await make_mirror(fill_min_bytes=1000, fill_min_window=0.3)
    digest = fake.add_blob(b"d" * 100_000)
    fake.faults[digest] = "drip"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    with pytest.raises(aiohttp.ClientPayloadError):  # cut short, never the whole body
        await asyncio.wait_for(resp.read(), 3 * PROMPTLY)
    assert await sample(mirror, "mirror_fill_resumes_total") == 5
    assert await sample(mirror, "mirror_fill_failures_total", '{reason="upstream_error"}') == 1


async def test_fill_max_seconds_bounds_a_slow_fill(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """A fill still running after fill_max_seconds is ended as an upstream failure."""
    mirror = await make_mirror(fill_min_bytes=1, fill_min_window=0.5, fill_max_seconds=1)
    digest = fake.add_blob(b"s" * 100_000)
    fake.faults[digest] = "drip"
    with capture_logs() as logs:
        resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(resp.read(), PROMPTLY)
    failed = [e for e in logs if e["event"] == "blob_fill_failed"]
    assert "fill_max_seconds" in failed[0]["detail"]


async def test_upstream_without_headers_fails_after_headers_timeout(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """An upstream that never sends headers answers 503 after headers_timeout, not the read timeout,
    for blobs and manifests."""
    mirror = await make_mirror(headers_timeout=0.5, read_timeout=60, breaker_failures=100)
    digest = fake.add_blob(b"h" * 1000)
    fake.faults[digest] = "stall_headers"
    fake.faults["manifest"] = "stall"
    fake.add_manifest("library/x", "1", [digest])
    blob = await asyncio.wait_for(mirror.get(f"/v2/library/x/blobs/{digest}"), PROMPTLY)
    assert blob.status == 503
    assert "no blob headers within 0.5 s" in (await blob.json())["errors"][0]["detail"]
    manifest = await asyncio.wait_for(mirror.get("/v2/library/x/manifests/1", headers=ACCEPT), PROMPTLY)
    assert manifest.status == 503


async def test_unexpected_exception_in_a_fill_reaches_every_reader(
    fake: FakeUpstream, mirror: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception nobody expected inside a fill ends it with a registry error for each of its
    readers, one logged event with the traceback, and a count."""
    digest = fake.add_blob(b"e" * 1000)
    gate = asyncio.Event()

    async def broken(*_: object, **__: object) -> None:
        await gate.wait()
        raise ZeroDivisionError("surprise")

    monkeypatch.setattr(mirror.app[keys.PROXIES]["docker.io"].upstream, "open_blob", broken)
    with capture_logs() as logs:

        async def fetch() -> aiohttp.ClientResponse:
            return await mirror.get(f"/v2/library/x/blobs/{digest}")

        readers = [asyncio.create_task(fetch()) for _ in range(3)]
        await eventually(
            lambda: (fill := mirror.app[keys.FILLS].get(digest)) is not None and fill._readers == 3
        )
        gate.set()
        answers = await asyncio.wait_for(asyncio.gather(*readers), PROMPTLY)
    assert [a.status for a in answers] == [503] * 3
    for answer in answers:
        assert (await answer.json())["errors"][0]["code"] == "UNAVAILABLE"
    crashed = [e for e in logs if e["event"] == "blob_fill_crashed"]
    assert len(crashed) == 1
    assert crashed[0]["exc_info"]
    assert await sample(mirror, "mirror_fill_failures_total", '{reason="internal"}') == 1
    assert await sample(mirror, "mirror_fills_in_flight") == 0
