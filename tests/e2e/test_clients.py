"""The request sequences of the Docker engine and containerd, replayed with their recorded headers
(DESIGN.md §1.1) against the mirror and a real upstream: exact and fast, and covering what the real
daemons (tests/e2e/test_runtimes.py) do only by chance, such as resumed ranges."""

from __future__ import annotations

import json
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.cdn import start_redirecting_registry
from tests.support.digests import sha256
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.polling import wait_until
from tests.support.registry import Registry
from tests.support.tokenserver import TokenServer

DOCKER_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/json",
    ]
)
CONTAINERD_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "*/*",
    ]
)


@pytest.fixture
def mirror(tmp_path: Path, upstream: Registry) -> Iterator[MirrorProcess]:
    with MirrorProcess(tmp_path / "mirror", upstream.url) as proc:
        yield proc


def test_docker_daemon_sequence(catalog: Catalog, mirror: MirrorProcess) -> None:
    """Docker: ping, HEAD by tag, GET by digest, blob GETs, and a resumed blob with Range → 206."""
    image, base = catalog.v2img, f"{mirror.url}/v2/library/v2img"
    close = {"Connection": "close"}
    assert raw_request("GET", f"{mirror.url}/v2/", headers=close).status == 200
    head = raw_request("HEAD", f"{base}/manifests/latest", headers={**close, "Accept": DOCKER_ACCEPT})
    assert head.status == 200
    digest = head.headers["docker-content-digest"]
    assert digest == image.manifest_digest
    assert head.headers["content-length"] == str(len(image.manifest))
    got = raw_request("GET", f"{base}/manifests/{digest}", headers={**close, "Accept": DOCKER_ACCEPT})
    assert got.body == image.manifest
    assert got.headers["content-type"] == image.manifest_media_type
    for blob in json.loads(got.body)["layers"]:
        body = raw_request("GET", f"{base}/blobs/{blob['digest']}", headers=close).body
        assert sha256(body) == blob["digest"]
    layer = image.layers[-1]
    part = raw_request("GET", f"{base}/blobs/{layer.digest}", headers={**close, "Range": "bytes=1000-"})
    assert part.status == 206
    assert part.headers["content-range"] == f"bytes 1000-{layer.size - 1}/{layer.size}"
    assert len(part.body) == layer.size - 1000


def test_containerd_sequence_with_ns(catalog: Catalog, mirror: MirrorProcess) -> None:
    """containerd: HEAD with ?ns=docker.io gets digest and length; blobs are never compressed."""
    index, base = catalog.multi, f"{mirror.url}/v2/library/multi"
    head = raw_request("HEAD", f"{base}/manifests/latest?ns=docker.io", headers={"Accept": CONTAINERD_ACCEPT})
    assert head.headers["docker-content-digest"] == index.digest
    assert head.headers["content-length"] == str(len(index.manifest))
    assert head.headers["content-type"] == index.media_type
    child = index.child("arm64")
    got = raw_request(
        "GET", f"{base}/manifests/{child.manifest_digest}?ns=docker.io", headers={"Accept": CONTAINERD_ACCEPT}
    )
    assert got.body == child.manifest
    layer = child.layers[0]
    blob = raw_request(
        "GET",
        f"{base}/blobs/{layer.digest}?ns=docker.io",
        headers={"Accept": f"{layer.media_type}, */*", "Accept-Encoding": "zstd, gzip"},
    )
    assert "content-encoding" not in blob.headers
    assert sha256(blob.body) == layer.digest


def test_cdn_redirect_with_token_auth_keeps_token_off_the_cdn(
    catalog: Catalog, upstream: Registry, token_server: TokenServer, tmp_path: Path
) -> None:
    """A token-auth upstream redirecting blobs to a CDN: bytes arrive, the CDN never sees Authorization."""
    registry, cdn = start_redirecting_registry(
        tmp_path / "redir", seed_from=upstream.root, auth=token_server.auth()
    )
    try:
        with MirrorProcess(tmp_path / "mirror", registry.url) as mirror:
            for layer in catalog.v2img.layers:
                resp = raw_request("GET", f"{mirror.url}/v2/library/v2img/blobs/{layer.digest}")
                assert resp.status == 200
                assert sha256(resp.body) == layer.digest
        assert len(cdn.seen) == len(catalog.v2img.layers)
        assert all("Authorization" not in r.headers and "authorization" not in r.headers for r in cdn.seen)
    finally:
        registry.stop()
        cdn.stop()


def test_killed_mirror_restarts_clean_and_serves_its_cache(
    catalog: Catalog, upstream: Registry, tmp_path: Path
) -> None:
    """After kill -9, leftovers of fills are removed at start and committed blobs are still served."""
    layer = catalog.big.layers[0]
    proc = MirrorProcess(tmp_path / "mirror", upstream.url).start()
    assert sha256(raw_request("GET", f"{proc.url}/v2/library/big/blobs/{layer.digest}").body) == layer.digest
    wait_until(lambda: proc.metric("mirror_fills_in_flight") == 0, what="fill committed")
    proc.stop(signal.SIGKILL)
    leftover = proc.cache_dir / "tmp" / "sha256-dead.partial"
    leftover.write_bytes(b"half a blob")
    mark = upstream.mark()
    with proc:
        assert not leftover.exists()
        resp = raw_request("GET", f"{proc.url}/v2/library/big/blobs/{layer.digest}")
        assert sha256(resp.body) == layer.digest
        assert upstream.blob_gets(mark) == []


def test_client_hanging_up_mid_blob_is_a_quiet_499(catalog: Catalog, mirror: MirrorProcess) -> None:
    """A client that closes its connection in the middle of a cached blob is logged as 499, with no
    traceback, and the mirror keeps serving."""
    layer = catalog.big.layers[0]
    path = f"/v2/library/big/blobs/{layer.digest}"
    raw_request("GET", f"{mirror.url}{path}")
    wait_until(lambda: mirror.metric("mirror_fills_in_flight") == 0, what="fill committed")
    with socket.create_connection(("127.0.0.1", mirror.port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: mirror\r\n\r\n".encode())
        sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
    wait_until(lambda: any('"status": 499' in line for line in mirror.log_lines()), what="the 499 log line")
    assert not any("Traceback" in line or "Error handling request" in line for line in mirror.log_lines())
    assert raw_request("GET", f"{mirror.url}/v2/").status == 200
