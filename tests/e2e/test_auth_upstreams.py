"""Authenticated real upstreams: docker-registry with token auth (our token server) and with htpasswd."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import HTPASSWD_PASSWORD, HTPASSWD_USER
from tests.support.catalog import Catalog
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry
from tests.support.skopeo import SkopeoError, layout_digests, skopeo_copy, write_registries_conf
from tests.support.tokenserver import TokenServer


def pull_v2img(mirror: MirrorProcess, tmp_path: Path, dest: str) -> set[str]:
    conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)
    out = tmp_path / dest
    skopeo_copy(
        "docker.io/library/v2img:latest", out, registries_conf=conf, tmpdir=tmp_path / "skopeo", format="dir"
    )
    return layout_digests(out)


def test_bearer_token_flow_against_token_auth_registry(
    catalog: Catalog, token_registry: Registry, token_server: TokenServer, tmp_path: Path
) -> None:
    """Through a token-auth upstream: challenge, one token per scope, tokens reused, image intact."""
    mark = len(token_server.seen)
    with MirrorProcess(tmp_path / "mirror", token_registry.url) as mirror:
        assert catalog.v2img.blobs <= pull_v2img(mirror, tmp_path, "first")
        assert catalog.v2img.blobs <= pull_v2img(mirror, tmp_path, "second")
        fetched = token_server.requests_since(mark)
        assert len(fetched) == 1
        assert fetched[0].scopes == ["repository:library/v2img:pull"]
        assert fetched[0].authorization is None
        assert mirror.metric("mirror_token_fetches_total", outcome="ok") == 1


def test_token_server_failure_is_a_registry_error(
    token_registry: Registry, token_server: TokenServer, tmp_path: Path
) -> None:
    """A token server answering 500 gives the client a registry error, not a 500 traceback."""
    token_server.fail_with = 500
    try:
        with MirrorProcess(tmp_path / "mirror", token_registry.url) as mirror:
            resp = raw_request("GET", f"{mirror.url}/v2/library/v2img/manifests/latest")
            assert resp.status in (502, 503)
            assert b'"code": "UNAVAILABLE"' in resp.body
            assert not any("Traceback" in line for line in mirror.log_lines())
    finally:
        token_server.fail_with = None


def test_basic_auth_upstream_with_configured_credentials(
    catalog: Catalog, htpasswd_registry: Registry, tmp_path: Path
) -> None:
    """With MIRROR_UPSTREAM_USERNAME/PASSWORD set, an htpasswd upstream serves the pull; no secret logged."""
    env = {"MIRROR_UPSTREAM_USERNAME": HTPASSWD_USER, "MIRROR_UPSTREAM_PASSWORD": HTPASSWD_PASSWORD}
    with MirrorProcess(tmp_path / "mirror", htpasswd_registry.url, env=env) as mirror:
        assert catalog.v2img.blobs <= pull_v2img(mirror, tmp_path, "out")
        assert not any(HTPASSWD_PASSWORD in line for line in mirror.log_lines())


def test_basic_auth_upstream_without_credentials_fails(htpasswd_registry: Registry, tmp_path: Path) -> None:
    """Without credentials the mirror answers 401 and the pull fails (the docker.io fallback has no DNS)."""
    with MirrorProcess(tmp_path / "mirror", htpasswd_registry.url) as mirror:
        resp = raw_request("GET", f"{mirror.url}/v2/library/v2img/manifests/latest")
        assert resp.status == 401
        assert b'"code": "UNAUTHORIZED"' in resp.body
        with pytest.raises(SkopeoError):
            pull_v2img(mirror, tmp_path, "out")
