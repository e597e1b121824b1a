"""IPv6 on loopback: an upstream at an IPv6 literal (`http://[::1]:PORT`), with token auth, serves
manifests and blobs through the mirror; `ns=` values naming bracketed IPv6 hosts are refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.conftest import MirrorFactory
from tests.integration.fake_upstream import FakeUpstream

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def v6_upstream(fake: FakeUpstream, aiohttp_server: Callable[..., Awaitable[TestServer]]) -> str:
    """The fake upstream listening on ::1; its base URL."""
    server = await aiohttp_server(fake.app(), host="::1")
    return f"http://[::1]:{server.port}"


async def test_upstream_at_an_ipv6_literal_serves_manifests_and_blobs(
    fake: FakeUpstream, v6_upstream: str, make_mirror: MirrorFactory
) -> None:
    """Manifest (session) and blob (transfer thread) requests reach an `http://[::1]:PORT` upstream,
    whose token realm on the same literal is trusted and answered."""
    fake.token = "v6-token"
    blob = fake.add_blob(b"ipv6 layer " * 1000)
    digest = fake.add_manifest("library/app", "1.0", [blob])
    mirror = await make_mirror(upstream=v6_upstream)
    manifest = await mirror.get("/v2/library/app/manifests/1.0")
    assert (manifest.status, manifest.headers["Docker-Content-Digest"]) == (200, digest)
    body = await (await mirror.get(f"/v2/library/app/blobs/{blob}")).read()
    assert body == fake.blobs[blob]
    assert fake.requests("GET", "/token")
    assert all(s.headers["Host"].startswith("[::1]:") for s in fake.seen)


@pytest.mark.parametrize("ns", ["[::1]", "[::1]:5000", "[::1%25lo]:5000", "[::]:443", "::1"])
async def test_ns_with_an_ipv6_host_is_refused_without_outbound_request(
    fake: FakeUpstream, mirror: Client, ns: str
) -> None:
    """A bracketed IPv6 `ns=` names no configured registry: 404 NAME_UNKNOWN, nothing sent anywhere."""
    resp = await mirror.get(f"/v2/library/app/manifests/1?ns={ns}")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"
    assert fake.seen == []
