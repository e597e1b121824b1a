"""Allow and deny lists in front of the real docker-registry: refused repositories never reach it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry
from tests.support.skopeo import SkopeoError, layout_digests, skopeo_copy, write_registries_conf

LISTS = {"MIRROR_ALLOW": "library/*", "MIRROR_DENY": "library/ociimg,library/big"}


@pytest.fixture
def mirror(tmp_path: Path, upstream: Registry) -> Iterator[MirrorProcess]:
    """A mirror allowing official images only, and of those not ociimg and big."""
    with MirrorProcess(tmp_path / "mirror", upstream.url, env=LISTS) as proc:
        yield proc


def test_skopeo_pulls_allowed_and_is_denied_refused_images_without_upstream_requests(
    catalog: Catalog, upstream: Registry, mirror: MirrorProcess, tmp_path: Path
) -> None:
    """skopeo pulls an allowed image; a denied one and one outside the allow list fail with DENIED,
    and the upstream's log shows no request naming either repository."""
    mark = upstream.mark()
    conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)
    out = tmp_path / "v2img"
    skopeo_copy(
        "docker.io/library/v2img:latest", out, registries_conf=conf, tmpdir=tmp_path / "s", format="dir"
    )
    assert catalog.v2img.blobs <= layout_digests(out)
    for ref in ("docker.io/library/ociimg:latest", "docker.io/team/app:1.0"):
        with pytest.raises(SkopeoError, match="denied"):
            skopeo_copy(ref, tmp_path / "refused", registries_conf=conf, tmpdir=tmp_path / "s", format="dir")
    routes = [r.route for r in upstream.requests(mark)]
    assert any("/library/v2img/" in route for route in routes)
    assert not any("/library/ociimg/" in route or "/team/app/" in route for route in routes)


def test_every_endpoint_of_a_refused_repository_is_denied_and_counted(
    catalog: Catalog, upstream: Registry, mirror: MirrorProcess
) -> None:
    """Manifests (GET, HEAD), blobs (GET, HEAD), tags and referrers of a refused repository answer 403
    DENIED with nothing sent upstream; each is counted in mirror_refused_requests_total."""
    mark = upstream.mark()
    layer = sorted(catalog.ociimg.blobs)[0]
    paths = [
        ("GET", "/v2/library/ociimg/manifests/latest", "manifest"),
        ("HEAD", "/v2/ociimg/manifests/latest", "manifest"),
        ("GET", f"/v2/library/ociimg/blobs/{layer}", "blob"),
        ("HEAD", f"/v2/library/ociimg/blobs/{layer}", "blob"),
        ("GET", "/v2/library/ociimg/tags/list", "tags"),
        ("GET", f"/v2/library/ociimg/referrers/{catalog.ociimg.manifest_digest}", "referrers"),
        ("GET", "/v2/team/app/manifests/1.0", "manifest"),
    ]
    for method, path, _ in paths:
        resp = raw_request(method, mirror.url + path)
        assert resp.status == 403, (method, path)
        if method == "GET":
            assert json.loads(resp.body)["errors"][0]["code"] == "DENIED"
    assert upstream.requests(mark) == []
    assert mirror.metric("mirror_refused_requests_total", upstream="docker.io") == len(paths)
    assert mirror.metric("mirror_refused_requests_total", kind="blob") == 2
    assert mirror.metric("mirror_requests_total", status="403") == len(paths)


def test_warm_of_a_refused_image_says_it_is_refused(mirror: MirrorProcess) -> None:
    """`mirror warm` of a denied image fails that image with DENIED and the lists' reason; exit 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    done = subprocess.run(
        [sys.executable, "-m", "mirror", "warm", "ociimg:latest", "v2img:latest", "--mirror", mirror.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert (
        "error DENIED: the mirror's allow and deny lists refuse this repository"
        in lines["docker.io/library/ociimg:latest"]
    )
    assert lines["docker.io/library/v2img:latest"].endswith("ok")
