"""Client mode in-process: the client's own credentials reach the upstream, for every request they cause."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.conftest import MirrorFactory
from tests.integration.fake_upstream import FakeUpstream

TOKEN = "client-own-token"
CLIENT = {"Authorization": f"Bearer {TOKEN}"}


async def test_the_clients_token_goes_with_probes_manifests_the_fill_and_its_resume(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Every upstream request a client's pull causes (the HEAD that authorizes it for the repository, the
    manifest GET, the blob download and its resume after a cut) carries that client's token; the mirror
    fetches no token of its own, and the blob needs no second HEAD (its repository is decided)."""
    fake.token = TOKEN
    data = bytes(range(256)) * 400
    digest = fake.add_blob(data)
    fake.faults[digest] = "truncate_once"
    fake.add_manifest("team/app", "1.0", [digest])
    mirror = await make_mirror(upstream_auth="client")
    resp = await mirror.get("/v2/team/app/manifests/1.0", headers=CLIENT)
    assert resp.status == 200
    blob = await mirror.get(f"/v2/team/app/blobs/{digest}", headers=CLIENT)
    assert await blob.read() == data
    to_registry = [s for s in fake.seen if s.path.startswith("/v2/")]
    assert [(s.method, "manifests" in s.path) for s in to_registry] == [
        ("HEAD", True),
        ("GET", True),
        ("GET", False),
        ("GET", False),  # the resume with Range
    ]
    assert all(s.headers.get("Authorization") == f"Bearer {TOKEN}" for s in to_registry)
    assert fake.requests(contains="/token") == []


async def test_the_clients_token_never_reaches_the_cdn(
    fake: FakeUpstream,
    make_mirror: MirrorFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    """A blob redirected to another origin is fetched there without the client's Authorization."""
    cdn = await aiohttp_server(fake.cdn_app())
    fake.redirect_to = str(cdn.make_url("")).rstrip("/")
    fake.token = TOKEN
    data = b"layer bytes" * 1000
    digest = fake.add_blob(data)
    mirror = await make_mirror(upstream_auth="client")
    blob = await mirror.get(f"/v2/team/app/blobs/{digest}", headers=CLIENT)
    assert await blob.read() == data
    assert all("Authorization" not in s.headers for s in fake.requests(contains="cdn:"))


async def test_a_client_without_credentials_gets_the_upstreams_challenge(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """No Authorization: the 401 carries the upstream's Bearer challenge, and nothing is cached for it."""
    fake.token = TOKEN
    digest = fake.add_blob(b"x" * 100)
    fake.add_manifest("team/app", "1.0", [digest])
    mirror = await make_mirror(upstream_auth="client")
    await (await mirror.get("/v2/team/app/manifests/1.0", headers=CLIENT)).read()
    resp = await mirror.get("/v2/team/app/manifests/1.0")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="http://')
    assert 'scope="repository:team/app:pull"' in resp.headers["WWW-Authenticate"]
    assert (await resp.json())["errors"][0]["code"] == "UNAUTHORIZED"


async def test_in_mirror_mode_a_clients_authorization_is_never_forwarded(
    fake: FakeUpstream, mirror: TestClient[web.Request, web.Application]
) -> None:
    """By default the client's Authorization stays at the mirror: the upstream never sees it."""
    digest = fake.add_blob(b"y" * 100)
    fake.add_manifest("team/app", "1.0", [digest])
    assert (await mirror.get("/v2/team/app/manifests/1.0", headers=CLIENT)).status == 200
    assert (await mirror.get(f"/v2/team/app/blobs/{digest}", headers=CLIENT)).status == 200
    assert fake.seen
    assert all("Authorization" not in s.headers for s in fake.seen)
