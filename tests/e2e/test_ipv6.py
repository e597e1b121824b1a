"""IPv6 end to end on ::1: the mirror listening on `[::1]` and on `[::]`, in front of a real
docker-registry listening on `[::1]` and configured by its IPv6-literal URL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.artifacts import push_image
from tests.support.digests import sha256
from tests.support.images import OCI_MANIFEST
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry


@pytest.mark.parametrize("listen", ["::1", "::"])
def test_pull_over_ipv6_from_an_ipv6_upstream(
    make_registry: Callable[..., Registry], tmp_path: Path, listen: str
) -> None:
    """A client on ::1 pulls a manifest and its blobs through a mirror listening on `[listen]`, whose
    upstream is `http://[::1]:PORT`."""
    registry = make_registry(ip="::1")
    assert registry.url.startswith("http://[::1]:")
    image = push_image(registry, "team/v6", "1.0", seed=6)
    with MirrorProcess(tmp_path / "mirror", registry.url, ip="::1", listen=listen) as mirror:
        assert mirror.url.startswith("http://[::1]:")
        resp = raw_request("GET", f"{mirror.url}/v2/team/v6/manifests/1.0", headers={"Accept": OCI_MANIFEST})
        assert (resp.status, resp.body) == (200, image.manifest)
        for digest in image.blobs:
            blob = raw_request("GET", f"{mirror.url}/v2/team/v6/blobs/{digest}")
            assert (blob.status, sha256(blob.body)) == (200, digest)
        assert any(r.route == "/v2/team/v6/manifests/1.0" for r in registry.requests())
        if listen == "::":  # every address: IPv4 clients too
            assert raw_request("GET", f"http://127.0.0.1:{mirror.port}/v2/").status == 200
