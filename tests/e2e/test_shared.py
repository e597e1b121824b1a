"""The shared mode: three real mirror processes on one real Redis, one real upstream registry."""

from __future__ import annotations

import contextlib
import functools
import http.client
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from mirror.cluster.coordinator import BREAKER_FAILURES
from tests.support.catalog import MIB, Catalog, ImageSpec, seed_image
from tests.support.cluster import REDIS_TIMEOUT, SharedMirrors
from tests.support.digests import sha256
from tests.support.images import Blob, ImageInfo, LayerSpec
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import BackgroundServer, raw_request
from tests.support.polling import wait_until
from tests.support.redis import RedisServer, Sentinel
from tests.support.registry import Registry
from tests.support.throttle import ThrottledProxy
from tests.support.tls import make_tls

#: A Redis breaker that probes again after half a second, so tests of Redis coming back are quick.
QUICK_COOLDOWN = {"MIRROR_REDIS_COOLDOWN": "0.5"}


@pytest.fixture
def replicas(tmp_path: Path, upstream: Registry, redis_server: RedisServer) -> Iterator[SharedMirrors]:
    """Three mirrors of `upstream` sharing `redis_server`."""
    with SharedMirrors(tmp_path / "mirrors", upstream.url, redis_server.url) as mirrors:
        yield mirrors


def _manifest_requests(registry: Registry, since: int, name: str) -> int:
    return len([r for r in registry.requests(since) if f"/v2/{name}/manifests/" in r.route])


def test_a_tag_asked_of_three_replicas_costs_one_upstream_request(
    replicas: SharedMirrors, upstream: Registry, catalog: Catalog
) -> None:
    """The same tag asked of all three replicas within its TTL: one upstream manifest request."""
    image = catalog.v2img
    mark = upstream.mark()
    for mirror in replicas:
        url = f"{mirror.url}/v2/{image.name}/manifests/{image.tag}"
        resp = raw_request("GET", url, headers={"Accept": image.manifest_media_type})
        assert resp.status == 200
        assert resp.body == image.manifest
    assert _manifest_requests(upstream, mark, image.name) == 1


@pytest.fixture
def layer_upstream(make_registry: Callable[..., Registry], tmp_path: Path) -> tuple[Registry, Blob]:
    """A private upstream holding one 12 MiB layer nobody has fetched yet."""
    registry = make_registry()
    spec = ImageSpec("library/shared", "1", (LayerSpec(12 * MIB, seed=18),), "oci")
    image = seed_image(registry, spec, tmp_path / "seed")
    return registry, image.layers[0]


def _get(url: str) -> bytes:
    resp = raw_request("GET", url, timeout=60)
    assert resp.status == 200, resp.body[:300]
    return resp.body


def test_thirty_cold_requests_over_three_replicas_cost_one_upstream_get(
    layer_upstream: tuple[Registry, Blob], redis_server: RedisServer, tmp_path: Path
) -> None:
    """30 concurrent cold GETs of one blob spread over three replicas: 1 upstream GET, every body right."""
    registry, layer = layer_upstream
    with (
        # A fill of about a second: every replica asks while it runs, however loaded the machine.
        ThrottledProxy(registry.port, rate=12 * MIB) as slow,
        SharedMirrors(tmp_path / "mirrors", slow.url, redis_server.url) as replicas,
    ):
        mark = registry.mark()
        urls = [f"{replicas[i % 3].url}/v2/library/shared/blobs/{layer.digest}" for i in range(30)]
        with ThreadPoolExecutor(30) as pool:
            bodies = list(pool.map(_get, urls))
        assert {sha256(b) for b in bodies} == {layer.digest}
        assert len([r for r in registry.blob_gets(mark) if r.route.endswith(layer.digest)]) == 1
        assert replicas.metric("mirror_upstream_bytes_received_total") == layer.size
        assert replicas.metric("mirror_cluster_fills_total", source="upstream") == 1
        assert replicas.metric("mirror_cluster_fills_total", source="filling") == 2


def test_a_blob_held_by_one_replica_is_served_to_the_others_from_it(
    layer_upstream: tuple[Registry, Blob], redis_server: RedisServer, tmp_path: Path
) -> None:
    """A blob held by replica A, asked of B and C: they get it from A, the upstream sees one GET."""
    registry, layer = layer_upstream
    with SharedMirrors(tmp_path / "mirrors", registry.url, redis_server.url) as replicas:
        mark = registry.mark()
        path = f"/v2/library/shared/blobs/{layer.digest}"
        assert sha256(_get(replicas[0].url + path)) == layer.digest
        for mirror in replicas.mirrors[1:]:
            assert sha256(_get(mirror.url + path)) == layer.digest
            assert mirror.metric("mirror_peer_requests_total", source="held") == 1
            assert mirror.metric("mirror_upstream_bytes_received_total") == 0
        assert len([r for r in registry.blob_gets(mark) if r.route.endswith(layer.digest)]) == 1
        assert replicas[0].metric("mirror_peer_served_total", result="store") == 2


def test_killing_the_filling_replica_leaves_its_readers_on_other_replicas_whole(
    layer_upstream: tuple[Registry, Blob], redis_server: RedisServer, tmp_path: Path
) -> None:
    """kill -9 of the replica filling a blob: readers on the others still get it whole, resumed."""
    registry, layer = layer_upstream
    path = f"/v2/library/shared/blobs/{layer.digest}"
    with (
        ThrottledProxy(registry.port, rate=6 * MIB) as slow,
        SharedMirrors(
            tmp_path / "mirrors", slow.url, redis_server.url, env={"MIRROR_LEASE_TTL": "1"}
        ) as replicas,
        ThreadPoolExecutor(3) as pool,
    ):
        filler = pool.submit(raw_request, "GET", replicas[0].url + path, timeout=60)
        wait_until(lambda: replicas[0].metric("mirror_fills_in_flight") == 1, what="fill on replica 0")
        readers = [pool.submit(_get, m.url + path) for m in replicas.mirrors[1:]]
        wait_until(
            lambda: all(m.metric("mirror_peer_bytes_received_total") > 0 for m in replicas.mirrors[1:]),
            what="both readers streaming from replica 0",
        )
        replicas[0].stop(signal.SIGKILL)
        assert [sha256(r.result()) for r in readers] == [layer.digest, layer.digest]
        with contextlib.suppress(OSError, http.client.HTTPException):
            filler.result()  # cut off with its replica: nothing to check
        resumed = replicas.metric("mirror_upstream_bytes_received_total")
        assert 0 < resumed < layer.size  # the survivors resumed with Range, not from byte 0
        assert replicas.metric("mirror_cluster_fills_total", source="upstream") == 1
        assert replicas.metric("mirror_peer_failures_total", reason="broken") == 2  # both cut off


class _LyingPeer(BaseHTTPRequestHandler):
    """A "replica" that answers every peer request with the right length of wrong bytes."""

    size = 0

    def do_GET(self) -> None:  # the stdlib's handler naming
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        self.wfile.write(b"\0" * self.size)

    def log_message(self, *args: object) -> None:
        pass


def test_a_peer_sending_wrong_bytes_is_dropped_and_the_retry_gets_right_bytes(
    layer_upstream: tuple[Registry, Blob], redis_server: RedisServer, tmp_path: Path
) -> None:
    """A peer whose bytes fail the digest is dropped from the hints; the client's retry gets right bytes."""
    registry, layer = layer_upstream
    _LyingPeer.size = layer.size
    path = f"/v2/library/shared/blobs/{layer.digest}"
    with (
        BackgroundServer(_LyingPeer, "lying peer") as liar,
        SharedMirrors(tmp_path / "mirrors", registry.url, redis_server.url, count=1) as replicas,
    ):
        liar_url = f"http://127.0.0.1:{liar.port}"
        held = f"mirror:held:{layer.digest}"
        with redis_server.client() as client:
            client.zadd(held, {liar_url: int((time.time() + 3600) * 1000)})
        with pytest.raises(http.client.IncompleteRead):  # cut short: never the whole wrong body
            raw_request("GET", replicas[0].url + path, timeout=60)
        assert sha256(_get(replicas[0].url + path)) == layer.digest
        assert replicas.metric("mirror_peer_failures_total", reason="digest_mismatch") == 1
        with redis_server.client() as client:
            assert client.zscore(held, liar_url) is None


def _readyz(mirror: MirrorProcess) -> dict[str, object]:
    resp = raw_request("GET", f"{mirror.url}/readyz")
    assert resp.status == 200
    found = resp.json()
    assert isinstance(found, dict)
    return found


def _pull(mirror: MirrorProcess, image: ImageInfo) -> None:
    """Manifest by tag, then config and layers: every body checked."""
    url = f"{mirror.url}/v2/{image.name}/manifests/{image.tag}"
    assert raw_request("GET", url, headers={"Accept": image.manifest_media_type}).body == image.manifest
    for blob in (image.config, *image.layers):
        assert sha256(_get(f"{mirror.url}/v2/{image.name}/blobs/{blob.digest}")) == blob.digest


def test_every_pull_succeeds_with_redis_killed(
    replicas: SharedMirrors, redis_server: RedisServer, catalog: Catalog
) -> None:
    """kill -9 of Redis: every replica still serves every pull, and reports Redis degraded, not failed."""
    redis_server.kill()
    for mirror, image in zip(replicas, (catalog.v2img, catalog.ociimg, catalog.app), strict=True):
        _pull(mirror, image)
    for mirror in replicas:
        redis = _readyz(mirror)["redis"]
        assert isinstance(redis, dict)
        assert redis["status"] == "degraded"
        assert mirror.metric("mirror_redis_breaker_state") == 2


def test_a_stopped_redis_costs_each_request_at_most_its_timeout_until_the_breaker_opens(
    replicas: SharedMirrors, redis_server: RedisServer, catalog: Catalog
) -> None:
    """SIGSTOP of Redis: requests go on; Redis is waited for only until its breaker opens."""
    mirror = replicas[0]
    started = time.monotonic()
    _pull(replicas[1], catalog.v2img)  # the same cold pull with Redis answering, for the report
    running = time.monotonic() - started
    redis_server.pause()
    try:
        started = time.monotonic()
        _pull(mirror, catalog.v2img)
        paused = time.monotonic() - started
        timeouts = mirror.metric("mirror_redis_operations_total", outcome="error")
        assert 0 < timeouts <= BREAKER_FAILURES  # then the breaker keeps requests away
        assert mirror.metric("mirror_redis_operations_total", outcome="skipped") > 0
        assert paused < (BREAKER_FAILURES + 1) * REDIS_TIMEOUT + 5  # generous: the machine is shared
    finally:
        redis_server.resume()
    print(f"cold pull of {catalog.v2img.ref}: {running:.3f} s with Redis, {paused:.3f} s with it stopped")


def _coordinating(mirror: MirrorProcess) -> bool:
    """Whether the mirror's latest Redis operation, made by a tag lookup now, succeeded."""
    raw_request("GET", f"{mirror.url}/v2/library/absent/manifests/x")
    redis = _readyz(mirror)["redis"]
    assert isinstance(redis, dict)
    return bool(redis["status"] == "ok")


def test_coordination_resumes_after_redis_restarts_empty(
    tmp_path: Path, upstream: Registry, redis_server: RedisServer, catalog: Catalog
) -> None:
    """Redis restarted empty: once its breaker closes, one tag asked of three replicas is one request."""
    with SharedMirrors(tmp_path / "mirrors", upstream.url, redis_server.url, env=QUICK_COOLDOWN) as replicas:
        redis_server.restart_empty()
        image = catalog.ociimg
        url = f"/v2/{image.name}/manifests/{image.tag}"
        for mirror in replicas:  # each finds its connections to Redis broken, then a new Redis
            wait_until(functools.partial(_coordinating, mirror), what="Redis answering again")
        mark = upstream.mark()
        for mirror in replicas:
            resp = raw_request("GET", mirror.url + url, headers={"Accept": image.manifest_media_type})
            assert resp.body == image.manifest
        assert _manifest_requests(upstream, mark, image.name) == 1


def _mirror_ops(mirror: MirrorProcess) -> dict[str, float]:
    """The mirror's Redis operations by name (its own count: the heartbeat excluded)."""
    found = {
        dict(labels)["op"]: value
        for (name, labels), value in mirror.metrics().items()
        if name == "mirror_redis_operations_total" and value
    }
    found.pop("heartbeat", None)
    return found


def test_hits_cost_no_redis_operation(replicas: SharedMirrors, catalog: Catalog) -> None:
    """Blob hits and manifest hits in the in-process cache cost 0 Redis operations."""
    mirror, image = replicas[0], catalog.v2img
    _pull(mirror, image)
    blobs = 1 + len(image.layers)
    wait_until(lambda: _mirror_ops(mirror).get("release", 0) == blobs, what="every lease released")
    before = _mirror_ops(mirror)
    for _ in range(5):
        _pull(mirror, image)
    assert _mirror_ops(mirror) == before


def test_a_blob_miss_costs_a_fixed_number_of_redis_commands(
    replicas: SharedMirrors, redis_server: RedisServer, catalog: Catalog
) -> None:
    """One cold blob on one replica: two round trips to Redis, a claim and a release (two EVALSHA)."""
    mirror, image = replicas[0], catalog.v2img
    blobs = f"{mirror.url}/v2/{image.name}/blobs/"
    _get(blobs + image.config.digest)  # loads the scripts into this Redis (once per Redis lifetime)
    wait_until(lambda: "del" in redis_server.command_calls(), what="the first release")
    redis_server.reset_stats()
    layer = image.layers[1]
    assert sha256(_get(blobs + layer.digest)) == layer.digest
    wait_until(lambda: "del" in redis_server.command_calls(), what="the lease released")
    calls = redis_server.command_calls()
    calls.pop("config|resetstat", None)
    calls.pop("info", None)
    print(f"Redis commands for one blob miss (EVALSHA, then the commands the scripts ran): {calls}")
    assert calls["evalsha"] == 2
    # Inside them: the claim looked up holders and the lease and took it; the release announced the
    # blob as held and gave the lease up.
    assert {k: calls[k] for k in ("zrangebyscore", "zadd", "pexpire", "del")} == dict.fromkeys(
        ("zrangebyscore", "zadd", "pexpire", "del"), 1
    )


def test_replicas_follow_a_sentinel_failover(tmp_path: Path, upstream: Registry, catalog: Catalog) -> None:
    """Through Sentinel: the master killed, pulls go on; after the failover, one tag asked of three
    replicas is one upstream request again (on the promoted master)."""
    with (
        RedisServer(tmp_path / "master") as master,
        RedisServer(tmp_path / "replica", replica_of=master.port) as standby,
        Sentinel(tmp_path / "sentinel", master.port) as sentinel,
        SharedMirrors(
            tmp_path / "mirrors", upstream.url, sentinel.url(), env={"MIRROR_REDIS_COOLDOWN": "0.5"}
        ) as replicas,
    ):
        wait_until(lambda: sentinel.watches_replica(standby.port), deadline_s=30, what="a replica to promote")
        master.kill()
        _pull(replicas[0], catalog.v2img)  # alone while Redis fails over
        wait_until(lambda: sentinel.master_port() == standby.port, deadline_s=30, what="failover")
        for mirror in replicas:
            wait_until(functools.partial(_coordinating, mirror), deadline_s=15, what="the new master")
        image = catalog.ociimg
        mark = upstream.mark()
        for mirror in replicas:
            url = f"{mirror.url}/v2/{image.name}/manifests/{image.tag}"
            assert (
                raw_request("GET", url, headers={"Accept": image.manifest_media_type}).body == image.manifest
            )
        assert _manifest_requests(upstream, mark, image.name) == 1


def test_a_tag_asked_of_three_replicas_at_once_costs_one_upstream_request(
    replicas: SharedMirrors, upstream: Registry, catalog: Catalog
) -> None:
    """The same cold tag asked of three replicas at the same moment: one upstream manifest GET."""
    image = catalog.app
    mark = upstream.mark()
    urls = [f"{m.url}/v2/{image.name}/manifests/{image.tag}" for m in replicas for _ in range(4)]
    accept = {"Accept": image.manifest_media_type}
    with ThreadPoolExecutor(len(urls)) as pool:
        bodies = list(pool.map(lambda url: raw_request("GET", url, headers=accept).body, urls))
    assert bodies == [image.manifest] * len(urls)
    assert _manifest_requests(upstream, mark, image.name) == 1
    # The others waited for it (mirror_manifests_from_replicas_total) or, arriving after it, found it.


def test_a_fill_longer_than_its_lease_keeps_the_lease(
    layer_upstream: tuple[Registry, Blob], redis_server: RedisServer, tmp_path: Path
) -> None:
    """A fill running past lease_ttl renews its lease: a replica asking then streams from the filler."""
    registry, layer = layer_upstream
    path = f"/v2/library/shared/blobs/{layer.digest}"
    env = {"MIRROR_LEASE_TTL": "0.5"}
    with (
        ThrottledProxy(registry.port, rate=6 * MIB) as slow,
        SharedMirrors(tmp_path / "mirrors", slow.url, redis_server.url, count=2, env=env) as replicas,
        ThreadPoolExecutor(2) as pool,
    ):
        mark = registry.mark()
        first = pool.submit(_get, replicas[0].url + path)
        wait_until(
            lambda: replicas[0].metric("mirror_redis_operations_total", op="renew") >= 3, what="renewals"
        )
        assert replicas[0].metric("mirror_fills_in_flight") == 1  # still filling, past three lease TTLs
        second = pool.submit(_get, replicas[1].url + path)
        assert sha256(first.result()) == sha256(second.result()) == layer.digest
        assert len([r for r in registry.blob_gets(mark) if r.route.endswith(layer.digest)]) == 1
        assert replicas[1].metric("mirror_cluster_fills_total", source="filling") == 1


def test_replicas_share_a_redis_over_tls(tmp_path: Path, upstream: Registry, catalog: Catalog) -> None:
    """rediss://: a Redis serving TLS only, its CA trusted through SSL_CERT_FILE, coordinates as well."""
    tls = make_tls(tmp_path / "tls")
    trust = {"SSL_CERT_FILE": str(tls.ca)}
    with (
        RedisServer(tmp_path / "redis", tls=tls) as redis_tls,
        SharedMirrors(tmp_path / "mirrors", upstream.url, redis_tls.url, count=2, env=trust) as replicas,
    ):
        image = catalog.v2img
        mark = upstream.mark()
        for mirror in replicas:
            url = f"{mirror.url}/v2/{image.name}/manifests/{image.tag}"
            resp = raw_request("GET", url, headers={"Accept": image.manifest_media_type})
            assert resp.body == image.manifest
            assert _coordinating(mirror)
        assert _manifest_requests(upstream, mark, image.name) == 1
