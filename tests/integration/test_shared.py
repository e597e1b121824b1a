"""The shared mode in-process, on a real Redis: the peer endpoint, the coordinator's leases and hints,
tags shared between two replicas, and Redis reported as degraded."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror.cluster import hints, peerauth
from mirror.cluster.coordinator import BREAKER_FAILURES, Coordinator
from mirror.cluster.redisurl import parse
from mirror.metrics import Metrics
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually
from tests.support.redis import RedisServer

Client = TestClient[web.Request, web.Application]
SECRET = "integration-peer-secret-0123"


def _shared(redis_server: RedisServer, advertise: str = "http://127.0.0.1:1") -> dict[str, object]:
    return {"redis_url": redis_server.url, "advertise_url": advertise, "peer_secret": SECRET}


def _signed(path: str, range_header: str = "", now: float | None = None) -> dict[str, str]:
    stamp = time.time() if now is None else now
    headers = {peerauth.HEADER: peerauth.sign(SECRET, "GET", path, range_header, stamp)}
    if range_header:
        headers["Range"] = range_header
    return headers


async def _error_code(resp: object) -> str:
    doc = await resp.json()  # type: ignore[attr-defined]
    return str(doc["errors"][0]["code"])


async def test_the_peer_endpoint_refuses_unsigned_requests(
    make_mirror: MirrorFactory, redis_server: RedisServer
) -> None:
    """A peer request without a valid credential is refused with 401 UNAUTHORIZED."""
    mirror = await make_mirror(**_shared(redis_server))
    resp = await mirror.get("/_mirror/peer/blobs/sha256:" + "a" * 64)
    assert resp.status == 401
    assert await _error_code(resp) == "UNAUTHORIZED"


async def test_the_peer_endpoint_refuses_an_expired_signature(
    make_mirror: MirrorFactory, redis_server: RedisServer
) -> None:
    """A signature made long ago (a replayed request) is refused."""
    mirror = await make_mirror(**_shared(redis_server))
    path = "/_mirror/peer/blobs/sha256:" + "a" * 64
    resp = await mirror.get(path, headers=_signed(path, now=time.time() - 10 * peerauth.MAX_SKEW))
    assert resp.status == 401


async def test_the_peer_endpoint_serves_what_it_holds_with_range_and_never_goes_upstream(
    fake: FakeUpstream, make_mirror: MirrorFactory, redis_server: RedisServer
) -> None:
    """A signed peer request gets a stored blob (206 for a Range); a blob it lacks is a 404 with no
    upstream request."""
    mirror = await make_mirror(**_shared(redis_server))
    data = random.Random(3).randbytes(300_000)
    digest = fake.add_blob(data)
    assert await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read() == data
    await eventually(lambda: stored(mirror, digest))
    path = f"/_mirror/peer/blobs/{digest}"
    resp = await mirror.get(path, headers=_signed(path, "bytes=1000-"))
    assert resp.status == 206
    assert await resp.read() == data[1000:]
    absent = fake.add_blob(b"not fetched by anyone")
    path = f"/_mirror/peer/blobs/{absent}"
    resp = await mirror.get(path, headers=_signed(path))
    assert resp.status == 404
    assert await _error_code(resp) == "BLOB_UNKNOWN"
    assert fake.requests(contains=absent) == []


async def test_there_is_no_peer_endpoint_without_the_shared_mode(mirror: Client) -> None:
    """A replica without redis_url answers peer requests with 404."""
    resp = await mirror.get("/_mirror/peer/blobs/sha256:" + "a" * 64)
    assert resp.status == 404


async def test_readyz_reports_a_dead_redis_as_degraded_and_stays_ready(
    fake: FakeUpstream, make_mirror: MirrorFactory, redis_server: RedisServer
) -> None:
    """With Redis gone, /readyz still answers 200 and says Redis is degraded."""
    fake.add_manifest("library/x", "1", [fake.add_blob(b"config")])
    mirror = await make_mirror(**_shared(redis_server))
    ready = await (await mirror.get("/readyz")).json()
    assert ready["redis"]["status"] == "ok"
    await asyncio.to_thread(redis_server.kill)
    assert (await mirror.get("/v2/library/x/manifests/1")).status == 200
    resp = await mirror.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["redis"]["status"] == "degraded"


async def test_a_tag_revalidated_by_one_replica_is_fresh_for_the_other(
    fake: FakeUpstream, make_mirror: MirrorFactory, redis_server: RedisServer
) -> None:
    """Replica A revalidates a tag whose TTL ran out; replica B then serves it without asking upstream."""
    fake.add_manifest("library/x", "1", [fake.add_blob(b"config")])
    a = await make_mirror(**_shared(redis_server, "http://127.0.0.1:2"), tag_ttl="0.5")
    b = await make_mirror(**_shared(redis_server, "http://127.0.0.1:3"), tag_ttl="0.5")
    for replica in (a, b):
        assert (await replica.get("/v2/library/x/manifests/1")).status == 200
    assert len(fake.requests(contains="/manifests/1")) == 1  # B found it in Redis
    await asyncio.sleep(0.6)  # the tag's TTL runs out (what is tested is time passing)
    assert (await a.get("/v2/library/x/manifests/1")).status == 200  # HEAD upstream: same digest
    assert (await b.get("/v2/library/x/manifests/1")).status == 200  # fresh from A's confirmation
    assert len(fake.requests("HEAD", "/manifests/1")) == 1


def _coordinator(redis_server: RedisServer, me: str, metrics: Metrics | None = None) -> Coordinator:
    return Coordinator(
        parse(redis_server.url),
        me,
        metrics or Metrics(),
        timeout=2.0,  # patient: a loaded machine must not open the breaker (30 s) by its stalls
        cooldown=30,
        lease_ttl=5,
        hint_ttl=60,
    )


async def test_one_lease_per_digest_then_the_holder_is_the_hint(redis_server: RedisServer) -> None:
    """The first claim gets the lease; another replica's claim names the filler; after the release
    (as held) claims name the holder; a dropped holder is forgotten."""
    digest = "sha256:" + "b" * 64
    async with (
        _coordinator(redis_server, "http://a:5000") as a,
        _coordinator(redis_server, "http://b:5000") as b,
    ):
        mine = await a.claim(digest)
        assert mine.token is not None
        assert await a.renew(digest, mine.token)
        assert (await b.claim(digest)).owner == "http://a:5000"
        await a.release(digest, mine.token, held=True)
        assert (await b.claim(digest)).peers == ("http://a:5000",)
        assert (await a.claim(digest)).token is not None  # a does not list itself as a peer
        await b.drop(digest, "http://a:5000")
        assert (await b.claim(digest)).owner == "http://a:5000"  # a's second lease, no hint left


async def test_a_dead_redis_costs_a_few_timeouts_then_nothing(redis_server: RedisServer) -> None:
    """Redis gone: operations return their defaults; after BREAKER_FAILURES errors they are skipped."""
    metrics = Metrics()
    async with _coordinator(redis_server, "http://a:5000", metrics) as a:
        await asyncio.to_thread(redis_server.kill)
        for _ in range(BREAKER_FAILURES + 3):
            claim = await a.claim("sha256:" + "c" * 64)
            assert (claim.token, claim.owner, claim.peers) == (None, None, ())
        errors = metrics.redis_operations.labels("claim", "error")._value.get()
        skipped = metrics.redis_operations.labels("claim", "skipped")._value.get()
        assert (errors, skipped) == (BREAKER_FAILURES, 3)
        assert a.status()["status"] == "degraded"


async def test_peer_requests_pass_client_auth_on_their_own_credential(
    make_mirror: MirrorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    """With client auth on, a signed peer request needs no client credentials, an unsigned one still
    gets 401, and the registry API still asks clients for theirs."""
    tokens = tmp_path / "tokens"
    await asyncio.to_thread(tokens.write_text, "ci:a-client-token-0123456789\n")
    mirror = await make_mirror(**_shared(redis_server), auth_tokens=str(tokens))
    path = "/_mirror/peer/blobs/sha256:" + "d" * 64
    assert (await mirror.get(path, headers=_signed(path))).status == 404  # signed: passed, not held
    assert (await mirror.get(path)).status == 401
    assert (await mirror.get("/v2/")).status == 401


async def test_a_redis_emptied_is_told_again_what_each_replica_holds(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registrar announces the store at start; after Redis lost everything (FLUSHALL, as an empty
    restart), its next heartbeat notices and the store is announced again."""
    monkeypatch.setattr(hints, "HEARTBEAT", 0.05)
    monkeypatch.setattr(hints, "FLUSH_SECONDS", 0.01)
    digest = "sha256:" + "e" * 64
    key = f"mirror:held:{digest}"

    def announced() -> bool:
        with redis_server.client() as client:
            return client.zscore(key, "http://a:5000") is not None

    async with _coordinator(redis_server, "http://a:5000") as a:
        registrar = hints.Registrar(a, lambda: [digest])
        registrar.start()
        try:
            await eventually(lambda: asyncio.to_thread(announced))
            assert await asyncio.to_thread(_flushall, redis_server, key) is None  # gone, at that instant
            await eventually(lambda: asyncio.to_thread(announced))
        finally:
            await registrar.close()


def _flushall(redis_server: RedisServer, key: str) -> object:
    """FLUSHALL, and the score of `key` right after it in the same transaction (the registrar's
    next heartbeat may announce it again within milliseconds)."""
    with redis_server.client() as client:
        pipe = client.pipeline(transaction=True)
        pipe.flushall()
        pipe.zscore(key, "http://a:5000")
        return pipe.execute()[1]
