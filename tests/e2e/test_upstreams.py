"""Two real registries as two upstreams of one mirror: containerd ns requests, podman path prefixes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.catalog import SPECS, Catalog, seed_image
from tests.support.digests import sha256
from tests.support.images import ImageInfo
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf


@pytest.fixture
def second(make_registry: Callable[..., Registry], tmp_path: Path) -> tuple[Registry, ImageInfo]:
    """A second real registry standing for ghcr.io, holding team/tool:latest."""
    registry = make_registry()
    image = seed_image(registry, SPECS["ociimg"], tmp_path / "seed2", name="team/tool")
    return registry, image


@pytest.fixture
def mirror(tmp_path: Path, upstream: Registry, second: tuple[Registry, ImageInfo]) -> Iterator[MirrorProcess]:
    config = tmp_path / "mirror.toml"
    config.write_text(f'[[upstreams]]\nregistry = "ghcr.io"\nurl = "{second[0].url}"\n')
    with MirrorProcess(tmp_path / "mirror", upstream.url, env={"MIRROR_CONFIG": str(config)}) as proc:
        yield proc


def test_podman_style_prefix_pulls_from_each_upstream(
    catalog: Catalog,
    upstream: Registry,
    second: tuple[Registry, ImageInfo],
    mirror: MirrorProcess,
    tmp_path: Path,
) -> None:
    """skopeo with a mirror location carrying a path (mirror/ghcr.io) pulls ghcr.io images from ghcr's
    upstream and docker.io images from Docker Hub's; each upstream sees only its own repositories."""
    ghcr_registry, tool = second
    hub_mark, ghcr_mark = upstream.mark(), ghcr_registry.mark()
    ghcr_conf = write_registries_conf(tmp_path / "ghcr.conf", mirror.host, "ghcr.io", "/ghcr.io")
    out = tmp_path / "tool"
    skopeo_copy(
        "ghcr.io/team/tool:latest", out, registries_conf=ghcr_conf, tmpdir=tmp_path / "s1", format="dir"
    )
    assert tool.blobs <= layout_digests(out)
    hub_conf = write_registries_conf(tmp_path / "hub.conf", mirror.host)
    out = tmp_path / "hub"
    skopeo_copy(
        "docker.io/library/v2img:latest", out, registries_conf=hub_conf, tmpdir=tmp_path / "s2", format="dir"
    )
    assert catalog.v2img.blobs <= layout_digests(out)
    assert {r.route.split("/")[2] for r in ghcr_registry.requests(ghcr_mark) if r.route != "/v2/"} == {"team"}
    hub_names = {"/".join(r.route.split("/")[2:4]) for r in upstream.requests(hub_mark) if r.route != "/v2/"}
    assert hub_names == {"library/v2img"}


def test_containerd_style_ns_requests_reach_the_named_upstream(
    upstream: Registry, second: tuple[Registry, ImageInfo], mirror: MirrorProcess
) -> None:
    """?ns=ghcr.io is served by ghcr's upstream with OCI-Namespace; an unconfigured ns reaches nobody."""
    ghcr_registry, tool = second
    hub_mark, ghcr_mark = upstream.mark(), ghcr_registry.mark()
    accept = {"Accept": tool.manifest_media_type}
    head = raw_request("HEAD", f"{mirror.url}/v2/team/tool/manifests/latest?ns=ghcr.io", headers=accept)
    assert head.headers["docker-content-digest"] == tool.manifest_digest
    assert head.headers["oci-namespace"] == "ghcr.io"
    for blob in tool.blobs:
        body = raw_request("GET", f"{mirror.url}/v2/team/tool/blobs/{blob}?ns=ghcr.io").body
        assert sha256(body) == blob
    refused = raw_request("GET", f"{mirror.url}/v2/team/tool/manifests/latest?ns=quay.io")
    assert refused.status == 404
    assert upstream.requests(hub_mark) == []
    assert len(ghcr_registry.blob_gets(ghcr_mark)) == len(tool.blobs)
