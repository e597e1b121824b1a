"""Blob pulls through the mirror against a hand-written upstream that injects faults."""

from __future__ import annotations

import asyncio
import errno
import random

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from mirror import keys
from mirror.upstream.receive import BUFFER as CHUNK  # one receive of a blob download
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.digests import sha256
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_cold_blob_streams_verified_bytes_and_is_cached(fake: FakeUpstream, mirror: Client) -> None:
    """A miss returns the exact bytes with digest headers, and the second GET is served from the cache."""
    data = payload(3 * CHUNK + 17)
    digest = fake.add_blob(data)
    first = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert first.status == 200
    assert first.headers["Docker-Content-Digest"] == digest
    assert first.headers["Content-Length"] == str(len(data))
    assert await first.read() == data
    await eventually(lambda: stored(mirror, digest))
    second = await mirror.get(f"/v2/other/repo/blobs/{digest}")
    assert await second.read() == data
    assert len(fake.requests("GET", "/blobs/")) == 1


async def test_concurrent_clients_share_one_upstream_fetch(fake: FakeUpstream, mirror: Client) -> None:
    """Eight concurrent GETs of a cold blob all get its bytes from one upstream GET."""
    data = payload(2 * CHUNK)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_midway"

    async def pull() -> bytes:
        async with mirror.get(f"/v2/library/x/blobs/{digest}") as resp:
            return await resp.read()

    pulls = [asyncio.create_task(pull()) for _ in range(8)]
    await eventually(lambda: len(fake.requests("GET", "/blobs/")) == 1)
    fake.release.set()
    assert all(body == data for body in await asyncio.gather(*pulls))
    assert len(fake.requests("GET", "/blobs/")) == 1


async def test_blob_in_tiny_chunks_without_length_is_streamed_and_cached(
    fake: FakeUpstream, mirror: Client
) -> None:
    """An upstream body with no Content-Length, in thousands of 97-byte HTTP chunks, reaches the client
    byte for byte and is cached once its digest matches."""
    data = payload(300_000, seed=7)
    digest = fake.add_blob(data)
    fake.faults[digest] = "chunked_dribble"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    assert await resp.read() == data
    await eventually(lambda: stored(mirror, digest))
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert len(fake.requests("GET", "/blobs/")) == 1


async def test_range_into_cached_blob_answers_206(fake: FakeUpstream, mirror: Client) -> None:
    """A Range on a cached blob answers 206 with Content-Range and just those bytes."""
    data = payload(1000)
    digest = fake.add_blob(data)
    await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read()
    await eventually(lambda: stored(mirror, digest))
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}", headers={"Range": "bytes=100-199"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == "bytes 100-199/1000"
    assert await resp.read() == data[100:200]


async def test_range_into_blob_being_filled_answers_206(fake: FakeUpstream, mirror: Client) -> None:
    """A Range on a cold blob is served from the fill as its bytes arrive (a resumed pull)."""
    data = payload(2 * CHUNK)
    digest = fake.add_blob(data)
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}", headers={"Range": f"bytes={CHUNK}-"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {CHUNK}-{2 * CHUNK - 1}/{2 * CHUNK}"
    assert await resp.read() == data[CHUNK:]


async def test_unsatisfiable_range_answers_416(fake: FakeUpstream, mirror: Client) -> None:
    """A Range starting past the end answers 416 with `Content-Range: bytes */size`."""
    digest = fake.add_blob(payload(10))
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}", headers={"Range": "bytes=10-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == "bytes */10"


async def test_wrong_bytes_abort_client_and_cache_nothing(fake: FakeUpstream, mirror: Client) -> None:
    """Upstream bytes that do not hash to the digest abort the client's body and are not cached."""
    data = payload(CHUNK + 5)
    digest = fake.add_blob(data)
    fake.faults[digest] = "wrong_bytes"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert not await stored(mirror, digest)
    metrics = await (await mirror.get("/metrics")).text()
    assert 'mirror_fill_failures_total{reason="digest_mismatch"} 1.0' in metrics
    fake.faults.pop(digest)
    again = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert await again.read() == data
    assert len(fake.requests("GET", "/blobs/")) == 2


async def test_failed_commit_still_serves_the_verified_bytes(
    fake: FakeUpstream, mirror: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error while committing a verified blob costs the cache entry, not the client's pull."""
    data = payload(2 * CHUNK + 9)
    digest = fake.add_blob(data)
    store = mirror.app[keys.STORE]

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "commit", disk_full)
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    assert await resp.read() == data

    async def failure_counted() -> bool:  # the commit fails in a thread after the last byte went out
        metrics = await (await mirror.get("/metrics")).text()
        return 'mirror_fill_failures_total{reason="disk"} 1.0' in metrics

    await eventually(failure_counted)
    assert not await stored(mirror, digest)
    monkeypatch.undo()
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    await eventually(lambda: stored(mirror, digest))
    assert len(fake.requests("GET", "/blobs/")) == 2


async def test_truncated_body_is_resumed_with_range(fake: FakeUpstream, mirror: Client) -> None:
    """An upstream body cut off mid-way is resumed with Range; the client never notices."""
    data = payload(2 * CHUNK + 3)
    digest = fake.add_blob(data)
    fake.faults[digest] = "truncate_once"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert await resp.read() == data
    gets = fake.requests("GET", "/blobs/")
    assert len(gets) == 2
    assert gets[1].headers["Range"].startswith("bytes=")
    assert gets[1].headers["Range"] != "bytes=0-"
    await eventually(lambda: stored(mirror, digest))


async def test_client_disconnect_does_not_abort_the_fill(fake: FakeUpstream, mirror: Client) -> None:
    """A client that hangs up mid-blob leaves the fill running; the blob is committed anyway."""
    data = payload(2 * CHUNK)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_midway"
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert len(await resp.content.readexactly(1000)) == 1000
    resp.close()
    fake.release.set()
    await eventually(lambda: stored(mirror, digest))
    again = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert await again.read() == data
    assert len(fake.requests("GET", "/blobs/")) == 1


async def test_redirect_to_cdn_never_carries_authorization(
    fake: FakeUpstream, make_mirror: MirrorFactory, aiohttp_server: object
) -> None:
    """A 307 to another origin is followed without the upstream's bearer token."""
    cdn = await aiohttp_server(fake.cdn_app())  # type: ignore[operator]
    fake.redirect_to = str(cdn.make_url("")).rstrip("/")
    fake.token = "secret-token"
    mirror = await make_mirror()
    data = payload(5000)
    digest = fake.add_blob(data)
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    assert await resp.read() == data
    cdn_hits = fake.requests("GET", "cdn:")
    assert len(cdn_hits) == 1
    assert "Authorization" not in cdn_hits[0].headers
    assert "sig=a%2Fb" in cdn_hits[0].path


async def test_blob_head_has_size_and_digest_without_download(fake: FakeUpstream, mirror: Client) -> None:
    """HEAD of a cold blob answers its size and digest and downloads nothing."""
    data = payload(777)
    digest = fake.add_blob(data)
    resp = await mirror.head(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "777"
    assert resp.headers["Docker-Content-Digest"] == digest
    assert fake.requests("GET", "/blobs/") == []


async def test_unknown_blob_answers_blob_unknown(fake: FakeUpstream, mirror: Client) -> None:
    """A blob the upstream does not have answers 404 BLOB_UNKNOWN."""
    digest = sha256(b"nothing")
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_truncated_cache_file_is_fetched_again(fake: FakeUpstream, mirror: Client) -> None:
    """A cached file whose size no longer matches is never served: it is dropped and fetched again."""
    data = payload(4096)
    digest = fake.add_blob(data)
    await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read()
    await eventually(lambda: stored(mirror, digest))
    store = mirror.app[keys.STORE]
    found = await asyncio.to_thread(store.open, digest)
    assert found is not None
    path = found.file.name
    found.close()
    await asyncio.to_thread(_truncate, path, 100)
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert await resp.read() == data
    assert len(fake.requests("GET", "/blobs/")) == 2


def _truncate(path: str, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


async def test_client_gone_before_headers_logs_no_traceback(
    fake: FakeUpstream, mirror: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up while its headers are pending is logged as a quiet 499, not a 500 or an
    aiohttp traceback; the download still completes."""
    digest = fake.add_blob(payload(1000))
    fake.faults[digest] = "stall_headers"
    with capture_logs() as logs:
        request = asyncio.create_task(mirror.get(f"/v2/library/x/blobs/{digest}"))
        await eventually(lambda: len(fake.requests("GET", "/blobs/")) == 1)
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
        fake.release.set()
        await eventually(lambda: stored(mirror, digest))
        await eventually(lambda: any(e["event"] == "request" for e in logs))
    assert [e["status"] for e in logs if e["event"] == "request"] == [499]
    assert "Error handling request" not in caplog.text


async def test_corrupt_small_blob_is_never_served_from_memory(fake: FakeUpstream, mirror: Client) -> None:
    """A small cached blob whose file was corrupted on disk is re-verified when loaded, dropped and
    fetched again, never served (from disk or memory) with the wrong bytes."""
    data = payload(2000)
    digest = fake.add_blob(data)
    await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read()
    await eventually(lambda: stored(mirror, digest))
    found = await asyncio.to_thread(mirror.app[keys.STORE].open, digest)
    assert found is not None
    path = found.file.name
    found.close()
    await asyncio.to_thread(_flip_first_byte, path)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    assert len(fake.requests("GET", "/blobs/")) == 2


def _flip_first_byte(path: str) -> None:
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
