"""Keeping on serving when the upstream is down, slow or rate-limiting: stale serving, circuit breaker,
rate-limit budget, negative caching, offline mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import oci
from mirror.storage.manifests import ManifestDisk
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
ACCEPT = {"Accept": f"{oci.OCI_MANIFEST}, {oci.DOCKER_MANIFEST}"}
TAG = "/v2/library/app/manifests/1.0"


def image(fake: FakeUpstream, tag: str = "1.0", seed: bytes = b"a") -> str:
    return fake.add_manifest("library/app", tag, [fake.add_blob(seed * 10)])


async def metrics(mirror: Client) -> str:
    return await (await mirror.get("/metrics")).text()


async def test_breaker_opens_after_5xx_burst_and_cache_is_served_without_asking(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """After 3 upstream 5xx the breaker opens: cached tags are served stale with no upstream request,
    misses fail fast with 503, and /readyz stays ready while reporting the open breaker."""
    mirror = await make_mirror(tag_ttl=0, breaker_failures=3, breaker_cooldown=3600)
    digest = image(fake)
    await mirror.get(TAG, headers=ACCEPT)
    fake.status_override = (503, {})
    for _ in range(3):
        assert (await mirror.get(TAG, headers=ACCEPT)).headers["Docker-Content-Digest"] == digest
    asked = len(fake.seen)
    for _ in range(5):
        resp = await mirror.get(TAG, headers=ACCEPT)
        assert resp.status == 200
        assert resp.headers["Docker-Content-Digest"] == digest
    miss = await mirror.get("/v2/library/other/manifests/1", headers=ACCEPT)
    assert miss.status == 503
    assert "circuit breaker open" in (await miss.json())["errors"][0]["detail"]
    assert len(fake.seen) == asked
    ready = await mirror.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["upstreams"]["docker.io"]["breaker"] == "open"
    text = await metrics(mirror)
    assert 'mirror_upstream_breaker_state{upstream="docker.io"} 2.0' in text
    assert 'mirror_upstream_errors_total{kind="5xx",upstream="docker.io"} 3.0' in text
    assert 'result="stale",status="200",upstream="docker.io"} 8.0' in text


async def test_one_probe_at_a_time_and_breaker_closes_when_back(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """After the cool-down one probe goes upstream while other requests are served from cache; its
    answer closes the breaker."""
    mirror = await make_mirror(tag_ttl=0, breaker_failures=1, breaker_cooldown=0.05)
    digest = image(fake)
    await mirror.get(TAG, headers=ACCEPT)
    fake.status_override = (500, {})
    await mirror.get(TAG, headers=ACCEPT)
    fake.status_override = None
    fake.faults["manifest"] = "stall"
    await asyncio.sleep(0.1)  # let the 50 ms cool-down pass: it is the behaviour under test, not a wait
    asked = len(fake.seen)
    probe = asyncio.create_task(mirror.get(TAG, headers=ACCEPT))
    await eventually(lambda: len(fake.seen) == asked + 1)
    others = [await mirror.get(TAG, headers=ACCEPT) for _ in range(3)]
    assert [r.headers["Docker-Content-Digest"] for r in others] == [digest] * 3
    assert len(fake.seen) == asked + 1
    assert 'mirror_upstream_breaker_state{upstream="docker.io"} 1.0' in await metrics(mirror)
    fake.release.set()
    assert (await probe).status == 200
    assert 'mirror_upstream_breaker_state{upstream="docker.io"} 0.0' in await metrics(mirror)


async def test_429_retry_after_opens_breaker_and_is_relayed(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A 429 opens the breaker for its Retry-After at once; the client gets 429 with Retry-After, and
    the budget headers become gauges."""
    mirror = await make_mirror(breaker_failures=5)
    fake.status_override = (
        429,
        {"Retry-After": "3600", "ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"},
    )
    first = await mirror.get(TAG, headers=ACCEPT)
    assert first.status == 429
    assert first.headers["Retry-After"] == "3600"
    second = await mirror.get("/v2/library/other/manifests/1", headers=ACCEPT)
    assert second.status == 503
    assert len(fake.seen) == 1
    text = await metrics(mirror)
    assert 'mirror_upstream_ratelimit_remaining{upstream="docker.io"} 0.0' in text
    assert 'mirror_upstream_ratelimit_limit{upstream="docker.io"} 100.0' in text
    assert 'mirror_upstream_errors_total{kind="429",upstream="docker.io"} 1.0' in text


async def test_hang_past_read_timeout_serves_stale(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """An upstream that hangs longer than the read timeout: the cached tag is served stale."""
    mirror = await make_mirror(tag_ttl=0, read_timeout=0.2)
    digest = image(fake)
    await mirror.get(TAG, headers=ACCEPT)
    fake.faults["manifest"] = "stall"
    resp = await mirror.get(TAG, headers=ACCEPT)
    assert resp.headers["Docker-Content-Digest"] == digest
    text = await metrics(mirror)
    assert 'mirror_upstream_errors_total{kind="timeout",upstream="docker.io"} 1.0' in text
    assert 'result="stale"' in text


async def test_404_for_a_tag_is_remembered_briefly(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """A tag the upstream does not have is asked once within the negative TTL."""
    mirror = await make_mirror(negative_ttl=60)
    for _ in range(3):
        resp = await mirror.get("/v2/library/nope/manifests/1", headers=ACCEPT)
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert len(fake.requests(None, "/manifests/")) == 1


async def test_negative_caching_can_be_disabled(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """negative_ttl = 0 asks the upstream every time."""
    mirror = await make_mirror(negative_ttl=0)
    for _ in range(2):
        assert (await mirror.get("/v2/library/nope/manifests/1", headers=ACCEPT)).status == 404
    assert len(fake.requests(None, "/manifests/")) == 2


async def test_low_budget_serves_cached_tags_without_revalidation(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """When the rate-limit budget is under the reserve, expired tags are served without any HEAD."""
    mirror = await make_mirror(tag_ttl=0, ratelimit_reserve=10)
    fake.manifest_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "5;w=21600"}
    digest = image(fake)
    await mirror.get(TAG, headers=ACCEPT)
    for _ in range(3):
        assert (await mirror.get(TAG, headers=ACCEPT)).headers["Docker-Content-Digest"] == digest
    assert len(fake.requests(None, "/manifests/")) == 1
    assert (await (await mirror.get("/readyz")).json())["upstreams"]["docker.io"]["ratelimit_remaining"] == 5


async def test_head_naming_a_cached_digest_costs_no_get(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """A tag that moved to a manifest already cached is switched over with the HEAD alone."""
    mirror = await make_mirror(tag_ttl=0)
    image(fake, "1.0", b"a")
    moved_to = image(fake, "2.0", b"b")
    await mirror.get(TAG, headers=ACCEPT)
    await mirror.get("/v2/library/app/manifests/2.0", headers=ACCEPT)
    fake.manifests[("library/app", "1.0")] = fake.manifests[("library/app", "2.0")]
    gets = len(fake.requests("GET", "/manifests/"))
    resp = await mirror.get(TAG, headers=ACCEPT)
    assert resp.headers["Docker-Content-Digest"] == moved_to
    assert len(fake.requests("GET", "/manifests/")) == gets
    assert fake.requests("HEAD", "/manifests/1.0")


async def test_offline_mode_contacts_nobody_and_serves_the_disk_cache(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """offline = true: cached blobs are served, misses fail fast, the upstream is never contacted."""
    online = await make_mirror(cache_dir=str(tmp_path / "shared"))
    digest = fake.add_blob(b"kept on disk")
    await (await online.get(f"/v2/library/x/blobs/{digest}")).read()
    await eventually(lambda: stored(online, digest))
    await online.close()
    asked = len(fake.seen)
    offline = await make_mirror(cache_dir=str(tmp_path / "shared"), offline=True)
    assert await (await offline.get(f"/v2/library/x/blobs/{digest}")).read() == b"kept on disk"
    miss = await offline.get(TAG, headers=ACCEPT)
    assert miss.status == 503
    assert "offline" in (await miss.json())["errors"][0]["detail"]
    assert len(fake.seen) == asked
    assert (await (await offline.get("/readyz")).json())["upstreams"]["docker.io"]["breaker"] == "offline"


async def test_restarted_mirror_serves_tags_and_manifests_offline(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """Tags and manifests survive a restart on disk: an offline mirror started on the same cache serves
    the whole image (tag, manifest by digest, blob) without contacting anyone."""
    cache = str(tmp_path / "shared")
    online = await make_mirror(cache_dir=cache)
    blob = fake.add_blob(b"layer kept" * 100)
    digest = fake.add_manifest("library/app", "1.0", [blob])
    await online.get(TAG, headers=ACCEPT)
    await (await online.get(f"/v2/library/app/blobs/{blob}")).read()
    await eventually(lambda: stored(online, blob))
    await online.close()
    asked = len(fake.seen)
    offline = await make_mirror(cache_dir=cache, offline=True, tag_ttl=0)
    by_tag = await offline.get(TAG, headers=ACCEPT)
    assert by_tag.status == 200
    assert by_tag.headers["Docker-Content-Digest"] == digest
    assert (await offline.get(f"/v2/library/app/manifests/{digest}", headers=ACCEPT)).status == 200
    assert await (await offline.get(f"/v2/library/app/blobs/{blob}")).read() == b"layer kept" * 100
    assert len(fake.seen) == asked


async def test_damaged_disk_copy_of_a_manifest_is_not_served(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """A manifest read back from disk is re-hashed: a damaged copy is ignored and fetched again."""
    cache = tmp_path / "shared"
    online = await make_mirror(cache_dir=str(cache))
    digest = image(fake)
    good = await (await online.get(f"/v2/library/app/manifests/{digest}", headers=ACCEPT)).read()
    await online.close()
    disk = await asyncio.to_thread(ManifestDisk, cache / "manifests")
    key = f"manifest:docker.io:library/app@{digest}"
    await asyncio.to_thread(disk.set, key, (b'{"tampered": true}', oci.OCI_MANIFEST))
    await asyncio.to_thread(disk.close)
    reopened = await make_mirror(cache_dir=str(cache))
    assert await (await reopened.get(f"/v2/library/app/manifests/{digest}", headers=ACCEPT)).read() == good
    assert len(fake.requests("GET", f"/manifests/{digest}")) == 2
