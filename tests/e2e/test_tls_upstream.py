"""An upstream over TLS, as Docker Hub is (registry and token realm on https): pulled through with its CA
trusted; refused, with a clear registry error and nothing cached, when the mirror cannot verify it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.images import ImageInfo
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf
from tests.support.tls import TlsFiles, make_tls
from tests.support.tokenserver import TokenServer


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def tls_upstream(make_registry: Callable[..., Registry], upstream: Registry, tls: TlsFiles) -> Registry:
    """A registry on https://127.0.0.1 holding what the session's upstream holds."""
    return make_registry(tls=tls, seed_from=upstream.root)


def test_pull_through_an_https_upstream_whose_ca_is_trusted(
    tls_upstream: Registry, tls: TlsFiles, v2img: ImageInfo, tmp_path: Path
) -> None:
    """With the upstream's CA in SSL_CERT_FILE, skopeo pulls through the mirror over TLS; digests match."""
    with MirrorProcess(tmp_path / "mirror", tls_upstream.url, env={"SSL_CERT_FILE": str(tls.ca)}) as mirror:
        mark = tls_upstream.mark()
        conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)
        out = tmp_path / "out"
        skopeo_copy(
            "docker.io/library/v2img:latest", out, registries_conf=conf, tmpdir=tmp_path / "s", format="dir"
        )
        assert v2img.blobs <= layout_digests(out)
        assert tls_upstream.blob_gets(mark), "the blobs came from the TLS upstream"


def test_an_upstream_certificate_the_mirror_cannot_verify_is_a_clear_error(
    tls_upstream: Registry, tmp_path: Path
) -> None:
    """Trusting another CA, the mirror answers 503 UNAVAILABLE naming the certificate failure, sends
    the upstream no request it could complete, and logs no traceback."""
    other = make_tls(tmp_path / "other-ca", ca_name="some other CA")
    with MirrorProcess(tmp_path / "mirror", tls_upstream.url, env={"SSL_CERT_FILE": str(other.ca)}) as mirror:
        mark = tls_upstream.mark()
        resp = raw_request(
            "GET",
            f"{mirror.url}/v2/library/v2img/manifests/latest",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert resp.status == 503
        error = json.loads(resp.body)["errors"][0]
        assert error["code"] == "UNAVAILABLE"
        assert "certificate" in error["detail"].lower()
        assert tls_upstream.requests(mark) == []
    log = (tmp_path / "mirror" / "mirror.log").read_text()
    assert "Traceback" not in log


def test_pull_through_an_https_upstream_with_an_https_token_realm(
    make_registry: Callable[..., Registry],
    make_token_server: Callable[..., TokenServer],
    upstream: Registry,
    tls: TlsFiles,
    v2img: ImageInfo,
    tmp_path: Path,
) -> None:
    """Docker Hub's shape: the registry and its bearer-token realm both on https. The mirror gets a pull
    token from the realm over TLS and pulls the image; digests match."""
    token_server = make_token_server(tls=tls)
    assert token_server.realm.startswith("https://")
    registry = make_registry(tls=tls, auth=token_server.auth(), seed_from=upstream.root)
    with MirrorProcess(tmp_path / "mirror", registry.url, env={"SSL_CERT_FILE": str(tls.ca)}) as mirror:
        conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)
        out = tmp_path / "out"
        skopeo_copy(
            "docker.io/library/v2img:latest", out, registries_conf=conf, tmpdir=tmp_path / "s", format="dir"
        )
        assert v2img.blobs <= layout_digests(out)
    scopes = {scope for request in token_server.seen for scope in request.scopes}
    assert "repository:library/v2img:pull" in scopes
