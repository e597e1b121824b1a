"""The shared mode: three real mirror processes on one real Redis, one real upstream registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.cluster import SharedMirrors
from tests.support.net import raw_request
from tests.support.redis import RedisServer
from tests.support.registry import Registry


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty Redis for one test (it may kill, stop or restart it)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


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
