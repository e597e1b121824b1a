"""Tag lists through the mirror: cached per `n`/`last` with the tag TTL, fetched again after it, served
stale when the upstream fails, and built from the tags the mirror holds in offline mode."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.conftest import MirrorFactory
from tests.integration.fake_upstream import FakeUpstream

Client = TestClient[web.Request, web.Application]
TAGS = "/v2/library/app/tags/list"


def tag(fake: FakeUpstream, name: str, seed: bytes = b"a") -> str:
    return fake.add_manifest("library/app", name, [fake.add_blob(seed * 10)])


async def test_tag_list_within_ttl_sends_nothing_upstream(fake: FakeUpstream, mirror: Client) -> None:
    """A second request for the same page within the tag TTL is answered from the cache."""
    tag(fake, "1.0")
    first = await (await mirror.get(TAGS)).json()
    tag(fake, "2.0", b"b")
    second = await (await mirror.get(TAGS)).json()
    assert first == second == {"name": "library/app", "tags": ["1.0"]}
    assert len(fake.requests("GET", "/tags/list")) == 1


async def test_pages_are_cached_by_n_and_last(fake: FakeUpstream, mirror: Client) -> None:
    """Each `n`/`last` combination is its own cache entry; other query parameters are not part of it."""
    tag(fake, "1.0")
    for query in ("?n=1", "?n=1&x=2", "?n=1&last=0", "?last=0&n=1", ""):
        assert (await mirror.get(TAGS + query)).status == 200
    assert [s.path.removeprefix(TAGS) for s in fake.requests("GET", "/tags/list")] == [
        "?n=1",
        "?n=1&last=0",
        "",
    ]


async def test_expired_tag_list_is_fetched_again(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """After the tag TTL the list is asked of the upstream again and the new tags are served."""
    mirror = await make_mirror(tag_ttl=0)
    tag(fake, "1.0")
    await mirror.get(TAGS)
    tag(fake, "2.0", b"b")
    resp = await mirror.get(TAGS)
    assert (await resp.json())["tags"] == ["1.0", "2.0"]
    metrics = await (await mirror.get("/metrics")).text()
    assert 'kind="tags",method="GET",result="revalidated",status="200"' in metrics


async def test_upstream_failure_serves_the_tag_list_stale(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """When the upstream fails (503, 429) an expired cached list is served, with its Link."""
    mirror = await make_mirror(tag_ttl=0)
    tag(fake, "1.0")
    await mirror.get(TAGS)
    for status in (503, 429):
        fake.status_override = (status, {})
        resp = await mirror.get(TAGS)
        assert resp.status == 200
        assert (await resp.json())["tags"] == ["1.0"]
    metrics = await (await mirror.get("/metrics")).text()
    assert 'kind="tags",method="GET",result="stale",status="200"' in metrics


async def test_upstream_failure_without_cache_is_an_error(fake: FakeUpstream, mirror: Client) -> None:
    """With no cached list an upstream failure is relayed (503), not an empty list."""
    fake.status_override = (503, {})
    resp = await mirror.get(TAGS)
    assert resp.status == 503


async def test_upstream_link_is_relayed_and_cached(fake: FakeUpstream, mirror: Client) -> None:
    """The upstream's paging Link goes to the client, from the cache too."""
    tag(fake, "1.0")
    fake.tags_link = '</v2/library/app/tags/list?last=1.0&n=1>; rel="next"'
    for _ in range(2):
        resp = await mirror.get(TAGS, params={"n": "1"})
        assert resp.headers["Link"] == fake.tags_link
    assert len(fake.requests("GET", "/tags/list")) == 1


async def test_not_json_tag_list_is_refused_not_cached(fake: FakeUpstream, mirror: Client) -> None:
    """An upstream tag list that is no tags document answers 502 and is not cached."""
    fake.status_override = (200, {})  # every answer: {"errors": [...]}, no "tags"
    assert (await mirror.get(TAGS)).status == 502
    fake.status_override = None
    tag(fake, "1.0")
    assert (await (await mirror.get(TAGS)).json())["tags"] == ["1.0"]


async def test_offline_mode_lists_the_tags_held_locally(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Offline, a tag list never fetched is built from the tags whose manifests are cached, and paged."""
    online = await make_mirror()
    for name, seed in (("1.0", b"a"), ("2.0", b"b"), ("3.0", b"c")):
        tag(fake, name, seed)
        assert (await online.get(f"/v2/library/app/manifests/{name}")).status == 200
    offline = await make_mirror(offline=True)
    before = len(fake.seen)
    resp = await offline.get(TAGS, params={"n": "2"})
    assert resp.status == 200
    assert await resp.json() == {"name": "library/app", "tags": ["1.0", "2.0"]}
    assert resp.headers["Link"] == f'<{TAGS}?n=2&last=2.0>; rel="next"'
    rest = await offline.get(TAGS, params={"n": "2", "last": "2.0"})
    assert (await rest.json())["tags"] == ["3.0"]
    assert "Link" not in rest.headers
    assert len(fake.seen) == before


async def test_upstream_link_points_back_through_the_mirror(
    fake: FakeUpstream, upstream: TestServer, make_mirror: MirrorFactory
) -> None:
    """A path-prefix routed tag list gets the upstream's Link pointed at the path the client used."""
    url = str(upstream.make_url("")).rstrip("/")
    mirror = await make_mirror(config=f'[[upstreams]]\nregistry = "ghcr.io"\nurl = "{url}"\n')
    fake.add_manifest("owner/app", "1.0", [fake.add_blob(b"x")])
    fake.tags_link = '</v2/owner/app/tags/list?last=1.0&n=1>; rel="next"'
    resp = await mirror.get("/v2/ghcr.io/owner/app/tags/list", params={"n": "1"})
    assert resp.headers["Link"] == '</v2/ghcr.io/owner/app/tags/list?last=1.0&n=1>; rel="next"'
