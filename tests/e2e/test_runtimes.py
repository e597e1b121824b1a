"""The real container runtimes pull through the mirror: a private containerd 1.6 and Docker engine 20.10."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.mirrorproc import MirrorProcess
from tests.support.registry import Registry
from tests.support.runtimes import Containerd, Dockerd, available, write_hosts_dir

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture
def mirror(tmp_path: Path, upstream: Registry) -> Iterator[MirrorProcess]:
    """A fresh mirror (empty cache) whose upstream is the seeded registry."""
    with MirrorProcess(tmp_path / "mirror", upstream.url) as proc:
        yield proc


def _requests(mirror: MirrorProcess, prefix: str) -> list[dict[str, object]]:
    """The `request` log events of the mirror whose path starts with `prefix`, in order."""
    events = []
    for line in mirror.log_lines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        is_request = isinstance(event, dict) and event.get("event") == "request"
        if is_request and str(event.get("path", "")).startswith(prefix):
            events.append(event)
    return events


def test_containerd_pulls_through_the_mirror_cold_then_cached(
    tmp_path: Path, upstream: Registry, catalog: Catalog, mirror: MirrorProcess
) -> None:
    """ctr pull via hosts.toml: same digest cold and cached, all with ?ns=docker.io, blobs fetched once."""
    image = catalog.v2img
    ref = "docker.io/library/v2img:latest"
    hosts = write_hosts_dir(tmp_path / "certs.d", mirror.url)
    before = upstream.mark()
    with Containerd(tmp_path / "containerd") as ctd:
        assert ctd.pull(ref, hosts) == image.manifest_digest
        cold_blobs = {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(before)}
        assert cold_blobs == image.blobs
        warm = upstream.mark()
        assert ctd.pull(ref, hosts, namespace="second") == image.manifest_digest
    assert upstream.blob_gets(warm) == []
    assert mirror.metric("mirror_requests_total", kind="blob", result="hit") >= len(image.blobs)
    seen = _requests(mirror, "/v2/library/v2img/")
    assert seen
    assert {e["ns"] for e in seen} == {"docker.io"}


def test_containerd_pulls_an_oci_index_for_its_own_platform(
    tmp_path: Path, upstream: Registry, catalog: Catalog, mirror: MirrorProcess
) -> None:
    """ctr pull of an index through the mirror records the index digest and fetches only amd64's blobs."""
    index = catalog.multi
    before = upstream.mark()
    with Containerd(tmp_path / "containerd") as ctd:
        digest = ctd.pull("docker.io/library/multi:latest", write_hosts_dir(tmp_path / "certs.d", mirror.url))
    assert digest == index.digest
    assert {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(before)} == index.child("amd64").blobs


def test_dockerd_pulls_through_the_mirror_cold_then_cached(
    tmp_path: Path, upstream: Registry, catalog: Catalog, mirror: MirrorProcess
) -> None:
    """docker pull via registry-mirrors: one image id and digest cold and cached, blobs fetched once."""
    image = catalog.v2img
    daemon_json = {"registry-mirrors": [mirror.url], "insecure-registries": [mirror.host]}
    before = upstream.mark()
    with Dockerd(tmp_path / "dockerd", daemon_json) as engine:
        cold = engine.pull("library/v2img:latest")
        assert cold["Id"] == image.config_digest
        assert cold["RepoDigests"] == [f"v2img@{image.manifest_digest}"]
        assert {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(before)} == image.blobs
        engine.remove("library/v2img:latest")
        warm = upstream.mark()
        cached = engine.pull("library/v2img:latest")
    assert (cached["Id"], cached["RepoDigests"]) == (cold["Id"], cold["RepoDigests"])
    assert upstream.blob_gets(warm) == []
    assert [e["method"] for e in _requests(mirror, "/v2/library/v2img/manifests/")][:2] == ["HEAD", "GET"]
