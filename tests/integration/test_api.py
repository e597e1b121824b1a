"""The registry API surface: bad input, writes, namespaces, upstream errors, auth, health endpoints."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import keys
from tests.integration.conftest import MirrorFactory
from tests.integration.fake_upstream import FakeUpstream

Client = TestClient[web.Request, web.Application]
GOOD = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/UPPER/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/a..b/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/-lead/blobs/" + GOOD, 400, "NAME_INVALID"),
        ("/v2/" + "a" * 256 + "/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/ok/manifests/.bad", 404, "MANIFEST_UNKNOWN"),
        ("/v2/ok/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
        ("/v2/ok/manifests/" + "t" * 129, 404, "MANIFEST_UNKNOWN"),
        ("/v2/ok/manifests/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/ok/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("/v2/ok/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("/v2/ok/blobs/latest", 400, "DIGEST_INVALID"),
        ("/v2/ok/nothing/here", 404, "NOT_FOUND"),
        ("/v2/_catalog", 404, "NOT_FOUND"),
    ],
)
async def test_bad_input_gets_registry_error_without_upstream_request(
    fake: FakeUpstream, mirror: Client, path: str, status: int, code: str
) -> None:
    """Invalid names, tags, digests and paths answer a registry error and send nothing upstream."""
    resp = await mirror.get(path)
    assert resp.status == status
    assert (await resp.json())["errors"][0]["code"] == code
    assert fake.seen == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_writes_are_unsupported(fake: FakeUpstream, mirror: Client, method: str) -> None:
    """Every write method answers 405 UNSUPPORTED: a mirror is pull-only."""
    resp = await mirror.request(method, "/v2/library/x/blobs/uploads/")
    assert resp.status == 405
    assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"
    assert fake.seen == []


async def test_base_endpoint_answers_api_version(mirror: Client) -> None:
    """`GET /v2/` answers 200 with the registry API version header."""
    resp = await mirror.get("/v2/")
    assert resp.status == 200
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_docker_io_namespace_is_served(fake: FakeUpstream, mirror: Client) -> None:
    """containerd's `?ns=docker.io` is served from the default upstream."""
    fake.add_manifest("library/app", "1", [fake.add_blob(b"x")])
    resp = await mirror.get("/v2/library/app/manifests/1?ns=docker.io")
    assert resp.status == 200


async def test_other_namespace_is_refused_without_outbound_request(
    fake: FakeUpstream, mirror: Client
) -> None:
    """A registry this mirror is not configured for is refused and contacted by nobody."""
    resp = await mirror.get("/v2/library/app/manifests/1?ns=evil.example.com")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"
    assert fake.seen == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "UNAUTHORIZED"),
        (403, "DENIED"),
        (429, "TOOMANYREQUESTS"),
        (500, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
    ],
)
async def test_upstream_errors_map_to_registry_errors(
    fake: FakeUpstream, mirror: Client, status: int, code: str
) -> None:
    """Upstream 401/403/429/5xx become the matching registry error, never a 500 with a traceback."""
    fake.status_override = (status, {"Retry-After": "42"} if status == 429 else {})
    resp = await mirror.get("/v2/library/app/manifests/1")
    assert (await resp.json())["errors"][0]["code"] == code
    assert resp.status == (status if status < 500 else 503)
    if status == 429:
        assert resp.headers["Retry-After"] == "42"


async def test_slow_upstream_headers_time_out(fake: FakeUpstream, make_mirror: MirrorFactory) -> None:
    """An upstream that sends no headers within the read timeout answers 503, not a hang."""
    mirror = await make_mirror(read_timeout=0.3)
    fake.add_manifest("library/app", "1", [fake.add_blob(b"x")])
    fake.faults["manifest"] = "stall"
    resp = await mirror.get("/v2/library/app/manifests/1")
    assert resp.status == 503
    assert "timed out" in (await resp.json())["errors"][0]["detail"]


async def test_unreachable_upstream_answers_503(make_mirror: MirrorFactory) -> None:
    """A refused connection to the upstream answers 503 UNAVAILABLE."""
    mirror = await make_mirror(upstream="http://127.0.0.1:9")
    resp = await mirror.get("/v2/library/app/manifests/1")
    assert resp.status == 503


async def test_bearer_token_is_fetched_once_and_reused(fake: FakeUpstream, mirror: Client) -> None:
    """The bearer flow: one 401, one token fetch shared by concurrent requests, then tokens reused."""
    fake.token = "t0k3n"
    fake.add_manifest("library/app", "1", [fake.add_blob(b"x")])
    fake.add_manifest("library/app", "2", [fake.add_blob(b"y")])
    first = await asyncio.gather(*(mirror.get("/v2/library/app/manifests/1") for _ in range(5)))
    assert {r.status for r in first} == {200}
    assert (await mirror.get("/v2/library/app/manifests/2")).status == 200
    assert len(fake.requests("GET", "/token")) == 1
    token_request = fake.requests("GET", "/token")[0].path
    assert "scope=repository:library/app:pull" in token_request.replace("%3A", ":").replace("%2F", "/")


async def test_basic_credentials_are_not_sent_to_an_untrusted_realm(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Configured credentials go to a realm on the upstream's own host, as Basic auth."""
    mirror = await make_mirror(upstream_username="u", upstream_password="p")
    fake.token = "t0k3n"
    fake.add_manifest("library/app", "1", [fake.add_blob(b"x")])
    assert (await mirror.get("/v2/library/app/manifests/1")).status == 200
    assert fake.requests("GET", "/token")[0].headers["Authorization"].startswith("Basic ")


async def test_health_and_readiness(mirror: Client) -> None:
    """/healthz answers while alive; /readyz once the cache is open and writable."""
    assert (await mirror.get("/healthz")).status == 200
    ready = await mirror.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"started": True, "cache_writable": True}


async def test_request_id_is_taken_from_the_client(mirror: Client) -> None:
    """A client's X-Request-Id is returned (and logged); otherwise one is made up."""
    assert (await mirror.get("/v2/", headers={"X-Request-Id": "abc-1"})).headers["X-Request-Id"] == "abc-1"
    assert len((await mirror.get("/v2/")).headers["X-Request-Id"]) == 32


async def test_storage_failure_is_a_503_and_a_blob_still_comes_whole(
    fake: FakeUpstream, mirror: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing cache index (e.g. its directory removed under the mirror) answers a blob HEAD with
    503 UNAVAILABLE, not a bare 500; a GET still gets the whole blob, from upstream."""

    def broken(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("no such table: Cache")

    monkeypatch.setattr(mirror.app[keys.STORE], "_row", broken)  # the index query, below the translation
    digest = fake.add_blob(b"x")
    got = await mirror.get(f"/v2/library/x/blobs/{digest}")
    assert (got.status, await got.read()) == (200, b"x")
    resp = await mirror.head(f"/v2/library/x/blobs/{digest}")
    assert resp.status == 503
