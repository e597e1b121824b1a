"""The referrers API through the mirror against a hand-written upstream: relayed from an upstream that has
it (pages merged), built from the fallback tag where it has not, filtered, cached, revalidated, stale."""

from __future__ import annotations

import json

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from tests.integration.conftest import MirrorFactory
from tests.integration.fake_upstream import OCI_INDEX, OCI_MANIFEST, FakeUpstream
from tests.support.digests import sha256

Client = TestClient[web.Request, web.Application]
SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
SUBJECT = "sha256:" + "5" * 64
FALLBACK = "sha256-" + "5" * 64
PATH = f"/v2/library/app/referrers/{SUBJECT}"


def referrer(n: int, artifact_type: str = SIG) -> dict[str, object]:
    return {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(b"r%d" % n),
        "size": n,
        "artifactType": artifact_type,
    }


def fallback_index(fake: FakeUpstream, *entries: dict[str, object]) -> None:
    """Put the fallback tag's index into the fake (a registry without the referrers API)."""
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}).encode()
    fake.manifests[("library/app", FALLBACK)] = (body, OCI_INDEX)


async def listed(resp: ClientResponse) -> list[object]:
    """The digests an answer lists, after checking it is an OCI index."""
    doc = await resp.json(content_type=None)
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == OCI_INDEX
    return [m["digest"] for m in doc["manifests"]]


async def test_upstream_referrers_api_pages_are_followed_and_merged(
    fake: FakeUpstream, mirror: Client
) -> None:
    """An upstream with the referrers API is asked; every page its Link names is fetched and merged."""
    fake.referrers_api = True
    fake.referrers[SUBJECT] = [referrer(n) for n in range(5)]
    resp = await mirror.get(PATH)
    assert resp.status == 200
    assert resp.content_type == OCI_INDEX
    assert await listed(resp) == [sha256(b"r%d" % n) for n in range(5)]
    assert len(fake.requests("GET", "/referrers/")) == 3
    assert fake.requests("GET", "/manifests/") == []


async def test_artifact_type_filter_is_applied_by_the_mirror(fake: FakeUpstream, mirror: Client) -> None:
    """`?artifactType=` keeps the matching referrers and says so in `OCI-Filters-Applied`."""
    fake.referrers_api = True
    fake.referrers[SUBJECT] = [referrer(1), referrer(2, SBOM)]
    resp = await mirror.get(PATH, params={"artifactType": SBOM})
    assert await listed(resp) == [sha256(b"r2")]
    assert resp.headers["OCI-Filters-Applied"] == "artifactType"
    unfiltered = await mirror.get(PATH)
    assert "OCI-Filters-Applied" not in unfiltered.headers
    assert len(fake.requests("GET", "/referrers/")) == 1  # one cached list serves every filter


async def test_without_upstream_api_the_fallback_tag_is_read(fake: FakeUpstream, mirror: Client) -> None:
    """An upstream answering 404 for the route gets its fallback tag `sha256-<hex>` read instead."""
    fallback_index(fake, referrer(1), referrer(2, SBOM))
    resp = await mirror.get(PATH)
    assert resp.status == 200
    assert await listed(resp) == [sha256(b"r1"), sha256(b"r2")]
    assert [s.path.partition("?")[0] for s in fake.requests("GET", "/manifests/")] == [
        f"/v2/library/app/manifests/{FALLBACK}"
    ]


async def test_an_upstream_without_the_api_is_not_asked_for_it_again(
    fake: FakeUpstream, mirror: Client
) -> None:
    """After the route answered 404, other subjects go straight to their fallback tags."""
    for n in range(3):
        assert (await mirror.get(f"/v2/library/app/referrers/sha256:{str(n) * 64}")).status == 200
    assert len(fake.requests("GET", "/referrers/")) == 1
    assert len(fake.requests("HEAD", "/manifests/sha256-")) == 3


async def test_no_referrers_is_an_empty_index_not_a_404(fake: FakeUpstream, mirror: Client) -> None:
    """A digest nothing refers to gets 200 with an empty OCI index, API or not."""
    resp = await mirror.get(PATH)
    assert resp.status == 200
    assert await listed(resp) == []
    fake.referrers_api = True
    other = await mirror.get(f"/v2/library/other/referrers/{SUBJECT}")
    assert (other.status, await listed(other)) == (200, [])


async def test_unreferred_digest_costs_no_manifest_get(fake: FakeUpstream, mirror: Client) -> None:
    """Without the API and without a fallback tag, finding the list empty takes a HEAD, not a GET."""
    assert await listed(await mirror.get(PATH)) == []
    assert [s.method for s in fake.requests(contains="/manifests/")] == ["HEAD"]


async def test_low_rate_limit_budget_serves_the_cached_list(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """While the upstream's pull budget is under the reserve, an expired list is served without asking."""
    mirror = await make_mirror(referrers_ttl=0)
    fallback_index(fake, referrer(1))
    await mirror.get(PATH)
    fake.manifest_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "2;w=21600"}
    fake.add_manifest("library/app", "1.0", [fake.add_blob(b"x")])
    await mirror.get("/v2/library/app/manifests/1.0")
    before = len(fake.seen)
    assert await listed(await mirror.get(PATH)) == [sha256(b"r1")]
    assert len(fake.seen) == before


async def test_cached_list_within_ttl_sends_nothing_upstream(fake: FakeUpstream, mirror: Client) -> None:
    """A second request within the TTL is answered from the cache."""
    fallback_index(fake, referrer(1))
    await mirror.get(PATH)
    before = len(fake.seen)
    resp = await mirror.get(PATH)
    assert await listed(resp) == [sha256(b"r1")]
    assert len(fake.seen) == before


async def test_expired_fallback_list_is_revalidated_with_one_head(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """After referrers_ttl an unchanged fallback tag costs one HEAD, not a GET."""
    mirror = await make_mirror(referrers_ttl=0)
    fallback_index(fake, referrer(1))
    await mirror.get(PATH)
    before = len(fake.seen)
    resp = await mirror.get(PATH)
    assert await listed(resp) == [sha256(b"r1")]
    assert [(s.method, "/manifests/" in s.path) for s in fake.seen[before:]] == [("HEAD", True)]


async def test_changed_fallback_tag_is_read_again(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """After referrers_ttl a fallback tag that now names another index is fetched again."""
    mirror = await make_mirror(referrers_ttl=0)
    fallback_index(fake, referrer(1))
    await mirror.get(PATH)
    fallback_index(fake, referrer(1), referrer(2, SBOM))
    resp = await mirror.get(PATH)
    assert await listed(resp) == [sha256(b"r1"), sha256(b"r2")]


async def test_upstream_failure_serves_the_list_stale(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """When revalidation fails (503, 429) the cached list is served."""
    mirror = await make_mirror(referrers_ttl=0)
    fake.referrers_api = True
    fake.referrers[SUBJECT] = [referrer(1)]
    await mirror.get(PATH)
    for status in (503, 429):
        fake.status_override = (status, {})
        resp = await mirror.get(PATH)
        assert resp.status == 200
        assert await listed(resp) == [sha256(b"r1")]


async def test_upstream_failure_without_cache_is_an_error(fake: FakeUpstream, mirror: Client) -> None:
    """With nothing cached, an upstream failure is 503, not an empty list that would hide signatures."""
    fake.status_override = (503, {})
    resp = await mirror.get(PATH)
    assert resp.status == 503
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"


async def test_endless_paging_is_refused(fake: FakeUpstream, mirror: Client) -> None:
    """An upstream whose Link always names another page is followed MAX_PAGES times, then refused."""
    fake.referrers_api = True
    fake.referrers[SUBJECT] = [referrer(1)]
    fake.referrers_link = f'<{PATH}?page=0>; rel="next"'
    resp = await mirror.get(PATH)
    assert resp.status == 502
    assert len(fake.requests("GET", "/referrers/")) == 32


async def test_link_to_another_origin_is_refused(fake: FakeUpstream, mirror: Client) -> None:
    """A next-page Link to another host is not followed (credentials never leave the upstream)."""
    fake.referrers_api = True
    fake.referrers[SUBJECT] = [referrer(1)]
    fake.referrers_link = '<http://198.51.100.1:9/v2/x/referrers/y>; rel="next"'
    resp = await mirror.get(PATH)
    assert resp.status == 502
    assert len(fake.requests("GET", "/referrers/")) == 1


async def test_invalid_digest_is_refused_without_upstream_request(fake: FakeUpstream, mirror: Client) -> None:
    """A malformed subject digest answers 400 DIGEST_INVALID and sends nothing upstream."""
    resp = await mirror.get("/v2/library/app/referrers/sha256:nope")
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert fake.seen == []
