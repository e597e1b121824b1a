"""Manifest pulls through the mirror: caching by digest and tag, TTL revalidation, stale serving."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import keys, oci
from tests.integration.conftest import MirrorFactory
from tests.integration.fake_upstream import OCI_MANIFEST, FakeUpstream
from tests.support.digests import sha256
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
ACCEPT = {"Accept": f"{oci.OCI_MANIFEST}, {oci.DOCKER_MANIFEST}, {oci.OCI_INDEX}"}


def image(fake: FakeUpstream, name: str = "library/app", tag: str = "1.0", seed: bytes = b"a") -> str:
    return fake.add_manifest(name, tag, [fake.add_blob(seed * 10)])


async def test_manifest_by_tag_is_served_with_client_headers(fake: FakeUpstream, mirror: Client) -> None:
    """A manifest by tag comes with its digest, exact media type, length and ETag; bytes unchanged."""
    digest = image(fake)
    resp = await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    assert resp.status == 200
    body = await resp.read()
    assert sha256(body) == digest == resp.headers["Docker-Content-Digest"]
    assert resp.headers["Content-Type"] == OCI_MANIFEST
    assert resp.headers["Content-Length"] == str(len(body))
    assert resp.headers["ETag"] == f'"{digest}"'
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_head_carries_the_same_headers_as_get(fake: FakeUpstream, mirror: Client) -> None:
    """HEAD of a manifest answers the GET's digest, type and Content-Length, without a body."""
    image(fake)
    get = await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    head = await mirror.head("/v2/library/app/manifests/1.0", headers=ACCEPT)
    for header in ("Docker-Content-Digest", "Content-Type", "Content-Length", "ETag"):
        assert head.headers[header] == get.headers[header]
    assert await head.read() == b""


async def test_one_component_names_get_library_prefix(fake: FakeUpstream, mirror: Client) -> None:
    """`alpine` is asked upstream as `library/alpine`, as Docker Hub stores official images."""
    image(fake, "library/alpine", "3.19")
    resp = await mirror.get("/v2/alpine/manifests/3.19", headers=ACCEPT)
    assert resp.status == 200
    assert fake.requests("GET", "/v2/library/alpine/manifests/3.19")


async def test_tag_within_ttl_sends_nothing_upstream(fake: FakeUpstream, mirror: Client) -> None:
    """Within the tag TTL, repeated pulls of a tag and its digest are served from cache."""
    digest = image(fake)
    for _ in range(3):
        assert (await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)).status == 200
        assert (await mirror.get(f"/v2/library/app/manifests/{digest}", headers=ACCEPT)).status == 200
    assert len(fake.requests(None, "/manifests/")) == 1


async def test_expired_tag_is_revalidated_with_head(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """After the TTL an unchanged tag costs one upstream HEAD and no GET."""
    mirror = await make_mirror(tag_ttl=0)
    image(fake)
    await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    resp = await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    assert resp.status == 200
    assert len(fake.requests("GET", "/manifests/")) == 1
    assert len(fake.requests("HEAD", "/manifests/")) == 1


async def test_request_that_saw_the_tag_stale_does_not_revalidate_it_again(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A request that read an expired tag just before another request's revalidation confirmed it
    (a race under load) is answered from the cache: one HEAD upstream, not two."""
    mirror = await make_mirror(tag_ttl=0.3)
    image(fake)
    await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    proxy = mirror.app[keys.PROXIES]["docker.io"]
    seen = await proxy._manifests.tag(proxy.label, "library/app", "1.0")
    assert seen is not None
    await eventually(lambda: not seen.fresh(0.3))
    assert (await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)).status == 200
    assert len(fake.requests("HEAD", "/manifests/")) == 1

    cached = await proxy._manifests.manifest(proxy.label, "library/app", seen.digest)
    assert cached is not None
    answer = await proxy._revalidate("library/app", "1.0", seen, cached, [oci.OCI_MANIFEST])
    assert answer.result == "hit"
    assert len(fake.requests("HEAD", "/manifests/")) == 1


async def test_changed_tag_is_fetched_again(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """After the TTL a tag that moved upstream is fetched and served with its new digest."""
    mirror = await make_mirror(tag_ttl=0)
    image(fake, seed=b"a")
    await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    new = image(fake, seed=b"b")
    resp = await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    assert resp.headers["Docker-Content-Digest"] == new


async def test_upstream_failure_serves_cached_tag_stale(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """When revalidation fails with 5xx, the cached manifest is served and counted as stale."""
    mirror = await make_mirror(tag_ttl=0)
    digest = image(fake)
    await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    fake.status_override = (503, {})
    resp = await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    assert resp.status == 200
    assert resp.headers["Docker-Content-Digest"] == digest
    metrics = await (await mirror.get("/metrics")).text()
    assert 'kind="manifest",method="GET",result="stale",status="200"' in metrics


async def test_unaccepted_cached_type_is_asked_upstream(fake: FakeUpstream, mirror: Client) -> None:
    """A cached manifest whose type the client does not accept is not served from cache."""
    image(fake)
    await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    resp = await mirror.get("/v2/library/app/manifests/1.0", headers={"Accept": oci.DOCKER_MANIFEST_LIST})
    assert resp.status == 200
    gets = fake.requests("GET", "/manifests/1.0")
    assert len(gets) == 2
    assert gets[1].headers["Accept"] == oci.DOCKER_MANIFEST_LIST


async def test_concurrent_manifest_requests_share_one_fetch(fake: FakeUpstream, mirror: Client) -> None:
    """Concurrent requests for one cold tag send one upstream GET."""
    image(fake)
    fake.faults["manifest"] = "stall"
    pending = [
        asyncio.create_task(mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)) for _ in range(5)
    ]
    await eventually(lambda: bool(fake.requests("GET", "/manifests/")))
    fake.release.set()
    responses = await asyncio.gather(*pending)
    assert {r.status for r in responses} == {200}
    assert len(fake.requests("GET", "/manifests/")) == 1


async def test_wrong_upstream_digest_is_refused_not_cached(fake: FakeUpstream, mirror: Client) -> None:
    """A manifest whose bytes do not match the upstream's digest header answers 502 and is not cached."""
    image(fake)
    fake.faults["manifest"] = "wrong_digest"
    resp = await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)
    assert resp.status == 502
    fake.faults.pop("manifest")
    assert (await mirror.get("/v2/library/app/manifests/1.0", headers=ACCEPT)).status == 200
    assert len(fake.requests("GET", "/manifests/")) == 2


async def test_oversized_manifest_is_refused(fake: FakeUpstream, mirror: Client) -> None:
    """A manifest over 4 MiB is refused with a registry error, not relayed."""
    body = json.dumps({"schemaVersion": 2, "pad": "x" * (4 * 1024 * 1024)}).encode()
    fake.manifests[("library/big", "1")] = (body, OCI_MANIFEST)
    resp = await mirror.get("/v2/library/big/manifests/1", headers=ACCEPT)
    assert resp.status == 502
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"


async def test_unknown_tag_answers_manifest_unknown(fake: FakeUpstream, mirror: Client) -> None:
    """A tag the upstream does not know answers 404 MANIFEST_UNKNOWN."""
    resp = await mirror.get("/v2/library/nope/manifests/1", headers=ACCEPT)
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_tags_list_is_relayed_with_paging(fake: FakeUpstream, mirror: Client) -> None:
    """The tag list comes from upstream, with `n` and `last` passed on."""
    image(fake, tag="1.0")
    image(fake, tag="2.0", seed=b"c")
    resp = await mirror.get("/v2/library/app/tags/list?n=10&last=0.9&junk=1")
    assert (await resp.json())["tags"] == ["1.0", "2.0"]
    seen = fake.requests("GET", "/tags/list")[0].path
    assert "n=10" in seen
    assert "last=0.9" in seen
    assert "junk" not in seen
