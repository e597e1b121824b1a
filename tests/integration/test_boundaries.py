"""What the mirror never does, each checked against the fake upstream on a real socket: follow a
redirect to a non-HTTP(S) scheme, act as a forward proxy, or let a request name a path outside its cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.integration.conftest import stored
from tests.integration.fake_upstream import FakeUpstream

Client = TestClient[web.Request, web.Application]


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:21", "file://", "gopher://127.0.0.1:70"])
async def test_a_redirect_to_a_non_http_scheme_is_refused_and_nothing_cached(
    fake: FakeUpstream, mirror: Client, target: str
) -> None:
    """An upstream 307 to ftp:, file: or gopher: answers 502 UNAVAILABLE; the blob is not stored."""
    fake.redirect_to = target
    digest = fake.add_blob(b"never served")
    resp = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 502
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
    assert not await stored(mirror, digest)


async def _raw(mirror: Client, request: bytes) -> bytes:
    """Send raw request bytes to the mirror; what it answers (the status line and headers)."""
    assert mirror.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", mirror.server.port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(4096)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_connect_and_absolute_form_requests_are_not_proxied(fake: FakeUpstream, mirror: Client) -> None:
    """`CONNECT host:443` and `GET http://other-host/...` are answered by the mirror itself (no tunnel,
    no request to that host): the mirror is not an open proxy."""
    assert mirror.server.port is not None
    connect = await _raw(mirror, b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
    assert not connect.startswith(b"HTTP/1.1 200")
    absolute = await _raw(
        mirror, b"GET http://127.0.0.1:9/anything HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n"
    )
    assert absolute.startswith(b"HTTP/1.1 404")
    assert fake.seen == []


@pytest.mark.parametrize(
    "path",
    [
        "/v2/library/../../../etc/blobs/sha256:" + "a" * 64,
        "/v2/library/%2e%2e/%2e%2e/etc/manifests/latest",
        "/v2/library/x/blobs/sha256:../../../../etc/passwd",
        "/v2/library/x/manifests/..%2F..%2Fetc",
    ],
)
async def test_a_path_that_would_leave_the_cache_is_refused_before_any_work(
    fake: FakeUpstream, mirror: Client, tmp_path: Path, path: str
) -> None:
    """Names, tags and digests with `..` are refused (400/404 registry errors), nothing is asked upstream,
    and nothing is written outside the cache directory."""
    before = await asyncio.to_thread(_outside_cache, tmp_path)
    resp = await mirror.get(path)
    assert resp.status in (400, 404)
    assert (await resp.json())["errors"][0]["code"] in (
        "NAME_INVALID",
        "DIGEST_INVALID",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NOT_FOUND",
    )
    assert fake.seen == []
    assert await asyncio.to_thread(_outside_cache, tmp_path) == before


def _outside_cache(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if "cache" not in p.relative_to(root).parts}
