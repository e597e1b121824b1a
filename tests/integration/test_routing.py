"""Several upstreams in one mirror: ns and path-prefix routing, isolation, hostile routing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def ghcr(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[FakeUpstream, str]]:
    """A second fake upstream, configured as ghcr.io."""
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    yield fake, str(server.make_url("")).rstrip("/")
    fake.release.set()


@pytest.fixture
async def tripwire() -> AsyncIterator[list[int]]:
    """A listener on loopback that counts every connection made to it: it must stay at zero."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connections.append(port)  # first item: the port, not a connection
    yield connections
    server.close()
    await server.wait_closed()


async def two_upstreams(make_mirror: MirrorFactory, ghcr_url: str, extra: str = "") -> Client:
    return await make_mirror(
        config=f'[[upstreams]]\nregistry = "ghcr.io"\nurl = "{ghcr_url}"\naliases = ["ghcr"]\n{extra}'
    )


async def test_same_name_under_two_upstreams_is_kept_apart(
    fake: FakeUpstream, ghcr: tuple[FakeUpstream, str], make_mirror: MirrorFactory
) -> None:
    """team/app:1 from docker.io and from ghcr.io are different images; each upstream sees only its own."""
    ghcr_fake, ghcr_url = ghcr
    hub_digest = fake.add_manifest("team/app", "1", [fake.add_blob(b"hub")])
    ghcr_digest = ghcr_fake.add_manifest("team/app", "1", [ghcr_fake.add_blob(b"ghcr")])
    mirror = await two_upstreams(make_mirror, ghcr_url)
    for _ in range(2):
        hub = await mirror.get("/v2/team/app/manifests/1?ns=docker.io")
        by_ns = await mirror.get("/v2/team/app/manifests/1?ns=ghcr.io")
        by_prefix = await mirror.get("/v2/ghcr.io/team/app/manifests/1")
        by_alias = await mirror.get("/v2/ghcr/team/app/manifests/1")
        assert hub.headers["Docker-Content-Digest"] == hub_digest
        for resp in (by_ns, by_prefix, by_alias):
            assert resp.headers["Docker-Content-Digest"] == ghcr_digest
    assert by_ns.headers["OCI-Namespace"] == "ghcr.io"
    assert "OCI-Namespace" not in by_prefix.headers
    assert {s.path for s in fake.seen} == {"/v2/team/app/manifests/1"}
    assert {s.path for s in ghcr_fake.seen} == {"/v2/team/app/manifests/1"}
    metrics = await (await mirror.get("/metrics")).text()
    assert 'kind="manifest",method="GET",result="hit",status="200",upstream="ghcr.io"} 5.0' in metrics


async def test_blobs_are_shared_by_digest_across_upstreams(
    fake: FakeUpstream, ghcr: tuple[FakeUpstream, str], make_mirror: MirrorFactory
) -> None:
    """A blob cached from one upstream serves the same digest requested through another."""
    ghcr_fake, ghcr_url = ghcr
    digest = fake.add_blob(b"same bytes")
    ghcr_fake.add_blob(b"same bytes")
    mirror = await two_upstreams(make_mirror, ghcr_url)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == b"same bytes"
    await eventually(lambda: stored(mirror, digest))
    resp = await mirror.get(f"/v2/ghcr.io/owner/x/blobs/{digest}")
    assert await resp.read() == b"same bytes"
    assert ghcr_fake.seen == []


async def test_credentials_stay_with_their_upstream(
    fake: FakeUpstream, ghcr: tuple[FakeUpstream, str], make_mirror: MirrorFactory
) -> None:
    """ghcr.io's credentials reach ghcr.io's token realm and nothing of docker.io."""
    ghcr_fake, ghcr_url = ghcr
    ghcr_fake.token = "ghcr-token"
    fake.token = "hub-token"
    fake.add_manifest("team/app", "1", [fake.add_blob(b"hub")])
    ghcr_fake.add_manifest("team/app", "1", [ghcr_fake.add_blob(b"ghcr")])
    mirror = await two_upstreams(make_mirror, ghcr_url, 'username = "bot"\npassword = "s3cret"\n')
    assert (await mirror.get("/v2/team/app/manifests/1?ns=ghcr.io")).status == 200
    assert (await mirror.get("/v2/team/app/manifests/1?ns=docker.io")).status == 200
    assert ghcr_fake.requests("GET", "/token")[0].headers["Authorization"].startswith("Basic ")
    assert all(not s.headers.get("Authorization", "").startswith("Basic") for s in fake.seen)
    assert all("ghcr-token" not in s.headers.get("Authorization", "") for s in fake.seen)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/app/manifests/1?ns=127.0.0.1:{port}",
        "/v2/app/manifests/1?ns=user@127.0.0.1:{port}",
        "/v2/app/manifests/1?ns=localhost:{port}",
        "/v2/app/manifests/1?ns=http://127.0.0.1:{port}/",
        "/v2/127.0.0.1:{port}/app/manifests/1",
        "/v2/ghcr.io/../127.0.0.1:{port}/app/manifests/1",
        "/v2/ghcr.io%2F..%2F127.0.0.1:{port}/app/manifests/1",
        "/v2/app/blobs/sha256:{digest}?ns=127.0.0.1:{port}",
    ],
)
async def test_hostile_routing_makes_no_outbound_request(
    fake: FakeUpstream,
    ghcr: tuple[FakeUpstream, str],
    make_mirror: MirrorFactory,
    tripwire: list[int],
    path: str,
) -> None:
    """ns values and prefixes naming unconfigured hosts are refused; nobody is contacted."""
    ghcr_fake, ghcr_url = ghcr
    mirror = await two_upstreams(make_mirror, ghcr_url)
    resp = await mirror.get(path.format(port=tripwire[0], digest="a" * 64))
    assert resp.status in (400, 404)
    assert (await resp.json())["errors"][0]["code"] in ("NAME_UNKNOWN", "NAME_INVALID", "NOT_FOUND")
    assert tripwire[1:] == []
    assert fake.seen == []
    assert ghcr_fake.seen == []
