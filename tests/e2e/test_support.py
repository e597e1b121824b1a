"""The test-support layer works against the real parts: docker-registry, the token server, skopeo."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from tests.support.catalog import SPECS, Catalog
from tests.support.cdn import start_redirecting_registry
from tests.support.digests import sha256
from tests.support.images import ACCEPT_ALL, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, build_layout
from tests.support.net import basic_auth, fetch_token, parse_challenge, raw_request
from tests.support.registry import Registry
from tests.support.skopeo import (
    SkopeoError,
    layout_digests,
    skopeo_copy,
    skopeo_inspect,
    write_auth_file,
    write_direct_registries_conf,
    write_registries_conf,
)
from tests.support.tokenserver import TokenServer


def _digest_of(blob_get_path: str) -> str:
    return blob_get_path.partition("?")[0].rsplit("/", 1)[1]


def test_seeded_manifests_are_served_with_catalog_digests(upstream: Registry, catalog: Catalog) -> None:
    """Every seeded tag answers with the digest, media type and exact bytes the catalog recorded."""
    expected = [
        (img.name, img.tag, img.manifest_digest, img.manifest_media_type, img.manifest)
        for img in catalog.images
    ]
    expected += [(i.name, i.tag, i.digest, i.media_type, i.manifest) for i in (catalog.multi, catalog.dlist)]
    for name, tag, digest, media_type, data in expected:
        resp = raw_request("GET", f"{upstream.url}/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
        assert resp.status == 200, name
        assert resp.headers["docker-content-digest"] == digest == sha256(resp.body)
        assert resp.headers["content-type"] == media_type
        assert resp.body == data
    assert catalog.v2img.manifest_media_type == DOCKER_MANIFEST
    assert catalog.multi.media_type == OCI_INDEX
    assert catalog.dlist.media_type == DOCKER_LIST
    assert catalog.app.layers[0] == catalog.v2img.layers[0]
    assert catalog.big.layers[0].size > 8 * 1024 * 1024


def test_skopeo_pull_of_multi_arch_index_yields_catalog_digests(
    upstream: Registry, catalog: Catalog, tmp_path: Path, skopeo_tmp: Path
) -> None:
    """Pulling library/multi --all straight from the upstream gets exactly the seeded blobs, each GET once."""
    conf = write_direct_registries_conf(tmp_path / "registries.conf", upstream.host)
    mark = upstream.mark()
    dest = tmp_path / "multi"
    skopeo_copy(
        "docker.io/library/multi:latest", dest, registries_conf=conf, tmpdir=skopeo_tmp, all_images=True
    )
    assert layout_digests(dest) == catalog.multi.blobs | catalog.multi.manifest_digests
    gets = upstream.blob_gets(mark)
    assert sorted(_digest_of(r.path) for r in gets) == sorted(catalog.multi.blobs)
    assert {r.status for r in gets} == {200}
    assert all(r.user_agent.startswith("skopeo/") for r in gets)


def test_skopeo_dir_copy_keeps_v2s2_manifest_bytes(
    upstream: Registry, catalog: Catalog, tmp_path: Path, skopeo_tmp: Path
) -> None:
    """A dir: copy of the Docker v2s2 image holds the exact seeded manifest and its blobs."""
    conf = write_direct_registries_conf(tmp_path / "registries.conf", upstream.host)
    dest = tmp_path / "v2img"
    skopeo_copy("docker.io/library/v2img:latest", dest, registries_conf=conf, tmpdir=skopeo_tmp, format="dir")
    assert (dest / "manifest.json").read_bytes() == catalog.v2img.manifest
    assert layout_digests(dest) == catalog.v2img.blobs


def test_skopeo_inspect_picks_platform_and_returns_raw_index(
    upstream: Registry, catalog: Catalog, tmp_path: Path, skopeo_tmp: Path
) -> None:
    """skopeo inspect reads the arm64 child's config (Digest stays the list's); --raw gives the list bytes."""
    conf = write_direct_registries_conf(tmp_path / "registries.conf", upstream.host)
    raw = skopeo_inspect("docker.io/library/dlist:latest", conf, True, tmpdir=skopeo_tmp)
    assert raw == catalog.dlist.manifest
    info = skopeo_inspect("docker.io/library/dlist:latest", conf, tmpdir=skopeo_tmp, override_arch="arm64")
    assert info["Digest"] == catalog.dlist.digest
    assert info["Architecture"] == "arm64"
    assert info["Layers"] == catalog.dlist.child("arm64").layer_digests


def test_requests_counts_each_completed_request(upstream: Registry, catalog: Catalog) -> None:
    """requests(since=mark()) lists exactly the requests made after the mark, sentinels excluded."""
    mark = upstream.mark()
    layer = catalog.ociimg.layers[0]
    for _ in range(3):
        resp = raw_request("GET", f"{upstream.url}/v2/{catalog.ociimg.name}/blobs/{layer.digest}")
        assert resp.status == 200
        assert sha256(resp.body) == layer.digest
    manifest_url = f"{upstream.url}/v2/{catalog.ociimg.name}/manifests/{catalog.ociimg.tag}"
    raw_request("HEAD", manifest_url, headers={"Accept": ACCEPT_ALL})
    # distribution logs a request once its handler returns, which can be just after the client has the
    # whole answer: the sentinel's line, or the next request's, may come first. So wait for the four
    # lines and compare them in any order.
    seen = upstream.wait_for(lambda found: len(found) >= 4, mark)
    assert sorted((r.method, r.status) for r in seen) == [("GET", 200)] * 3 + [("HEAD", 200)]
    assert len(upstream.blob_gets(mark)) == 3
    assert upstream.manifest_gets(mark) == []
    assert {r.size for r in seen if r.method == "GET"} == {layer.size}


def test_token_registry_challenges_then_accepts_a_token(
    token_registry: Registry, token_server: TokenServer, catalog: Catalog
) -> None:
    """The token upstream answers 401 with a Bearer challenge naming our realm and serves with its token."""
    path = f"/v2/{catalog.v2img.name}/manifests/{catalog.v2img.tag}"
    resp = raw_request("GET", token_registry.url + path, headers={"Accept": DOCKER_MANIFEST})
    assert resp.status == 401
    scheme, params = parse_challenge(resp.headers["www-authenticate"])
    assert scheme == "bearer"
    assert params["realm"] == token_server.realm
    assert params["service"] == token_server.service
    assert params["scope"] == f"repository:{catalog.v2img.name}:pull"
    mark = len(token_server.seen)
    token = fetch_token(params)
    assert token_server.requests_since(mark)[0].scopes == [params["scope"]]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == token_server.service
    assert claims["access"] == [{"type": "repository", "name": catalog.v2img.name, "actions": ["pull"]}]
    ok = raw_request(
        "GET",
        token_registry.url + path,
        headers={"Accept": DOCKER_MANIFEST, "Authorization": f"Bearer {token}"},
    )
    assert ok.status == 200
    assert ok.headers["docker-content-digest"] == catalog.v2img.manifest_digest
    other = token_server.issue(["repository:library/other:pull"])
    denied = raw_request("GET", token_registry.url + path, headers={"Authorization": f"Bearer {other}"})
    assert denied.status == 401
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
    expired = token_server.issue([params["scope"]], lifetime_s=-300)
    stale = raw_request("GET", token_registry.url + path, headers={"Authorization": f"Bearer {expired}"})
    assert stale.status == 401


def test_token_server_options(make_token_server: Callable[..., TokenServer]) -> None:
    """credentials demand Basic auth; expires_in=None omits the field; denied repositories get no actions."""
    guarded = make_token_server(credentials=("alice", "pw"))
    url = guarded.realm + f"?service={guarded.service}&scope=repository:x/y:pull"
    assert raw_request("GET", url).status == 401
    assert raw_request("GET", url, headers={"Authorization": basic_auth("alice", "nope")}).status == 401
    ok = raw_request("GET", url, headers={"Authorization": basic_auth("alice", "pw")})
    body = json.loads(ok.body)
    assert ok.status == 200
    assert body["expires_in"] == 300
    assert body["token"] == body["access_token"]
    assert jwt.decode(body["token"], options={"verify_signature": False})["sub"] == "alice"
    assert [r.authorization for r in guarded.seen][-1] == basic_auth("alice", "pw")
    bare = make_token_server(expires_in=None)
    bare.denied_repositories.add("secret/repo")
    answer = json.loads(raw_request("GET", bare.realm + "?scope=repository:secret/repo:pull").body)
    assert "expires_in" not in answer
    claims = jwt.decode(answer["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "secret/repo", "actions": []}]
    assert claims["exp"] - claims["iat"] == 60


def test_htpasswd_registry_needs_credentials(htpasswd_registry: Registry, catalog: Catalog) -> None:
    """The Basic-auth upstream rejects anonymous and wrong credentials and serves the right ones."""
    url = f"{htpasswd_registry.url}/v2/{catalog.v2img.name}/manifests/{catalog.v2img.tag}"
    anonymous = raw_request("HEAD", url, headers={"Accept": DOCKER_MANIFEST})
    assert anonymous.status == 401
    assert parse_challenge(anonymous.headers["www-authenticate"])[0] == "basic"
    wrong = raw_request("HEAD", url, headers={"Authorization": basic_auth("mirror", "wrong")})
    assert wrong.status == 401
    assert htpasswd_registry.creds is not None
    good = raw_request(
        "HEAD",
        url,
        headers={"Accept": DOCKER_MANIFEST, "Authorization": basic_auth(*htpasswd_registry.creds)},
    )
    assert good.status == 200
    assert good.headers["docker-content-digest"] == catalog.v2img.manifest_digest


def test_stop_start_keeps_port_content_and_log(
    upstream: Registry, catalog: Catalog, make_registry: Callable[..., Registry]
) -> None:
    """A stopped registry refuses connections; start() brings it back on its port with the same content."""
    registry = make_registry(seed_from=upstream.root)
    path = f"/v2/{catalog.ociimg.name}/manifests/{catalog.ociimg.tag}"
    assert raw_request("HEAD", registry.url + path, headers={"Accept": ACCEPT_ALL}).status == 200
    mark = registry.mark()
    port = registry.port
    registry.stop()
    with pytest.raises(ConnectionRefusedError):
        raw_request("HEAD", registry.url + path)
    registry.start()
    assert registry.port == port
    resp = raw_request("HEAD", registry.url + path, headers={"Accept": ACCEPT_ALL})
    assert resp.headers["docker-content-digest"] == catalog.ociimg.manifest_digest
    assert [(r.method, r.path) for r in registry.requests(mark)] == [("HEAD", path)]


def test_redirect_middleware_sends_blobs_to_the_cdn(
    upstream: Registry, catalog: Catalog, tmp_path: Path
) -> None:
    """With redirect_baseurl, blob GETs answer 307 to the BlobServer, which serves the exact bytes."""
    registry, cdn = start_redirecting_registry(tmp_path / "redirecting", seed_from=upstream.root)
    try:
        layer = catalog.v2img.layers[1]
        resp = raw_request("GET", f"{registry.url}/v2/{catalog.v2img.name}/blobs/{layer.digest}")
        assert resp.status == 307
        assert resp.headers["location"].startswith(cdn.url + "/")
        blob = raw_request("GET", resp.headers["location"])
        assert blob.status == 200
        assert sha256(blob.body) == layer.digest
        assert [r.method for r in cdn.seen] == ["GET"]
    finally:
        registry.stop()
        cdn.stop()


def test_layouts_are_deterministic(catalog: Catalog, tmp_path: Path) -> None:
    """Building the same spec twice gives identical bytes and the digests seeded upstream."""
    spec = SPECS["app"]
    first, second = (
        build_layout(tmp_path / d, layers=list(spec.layers), tag=spec.tag, fmt=spec.fmt) for d in ("a", "b")
    )
    assert first == second
    assert first.manifest == catalog.app.manifest
    assert layout_digests(tmp_path / "a") == catalog.app.blobs | {catalog.app.manifest_digest}


def test_mirror_registries_conf_sends_docker_io_pulls_to_the_mirror(
    upstream: Registry, catalog: Catalog, tmp_path: Path, skopeo_tmp: Path
) -> None:
    """With the upstream standing in as the mirror, skopeo pulls docker.io images from it, not docker.io."""
    conf = write_registries_conf(tmp_path / "registries.conf", upstream.host)
    mark = upstream.mark()
    info = skopeo_inspect("docker.io/library/v2img:latest", conf, tmpdir=skopeo_tmp)
    assert info["Digest"] == catalog.v2img.manifest_digest
    dest = tmp_path / "oci"
    skopeo_copy("docker.io/library/v2img:latest", dest, registries_conf=conf, tmpdir=skopeo_tmp)
    assert layout_digests(dest) >= catalog.v2img.blobs  # the manifest itself is converted to OCI
    routes = {r.route for r in upstream.manifest_gets(mark)}
    assert routes == {"/v2/library/v2img/manifests/latest"}


def test_skopeo_authenticates_to_token_and_htpasswd_upstreams(
    token_registry: Registry,
    token_server: TokenServer,
    htpasswd_registry: Registry,
    catalog: Catalog,
    tmp_path: Path,
    skopeo_tmp: Path,
) -> None:
    """skopeo fetches a pull token itself; for a rewritten htpasswd host it skips --creds, reads auth.json."""
    ref = "docker.io/library/v2img:latest"
    token_conf = write_direct_registries_conf(tmp_path / "token.conf", token_registry.host)
    mark = len(token_server.seen)
    assert skopeo_inspect(ref, token_conf, True, tmpdir=skopeo_tmp) == catalog.v2img.manifest
    assert "repository:library/v2img:pull" in {s for r in token_server.requests_since(mark) for s in r.scopes}
    basic_conf = write_direct_registries_conf(tmp_path / "basic.conf", htpasswd_registry.host)
    assert htpasswd_registry.creds is not None
    with pytest.raises(SkopeoError, match="authentication required"):
        skopeo_inspect(ref, basic_conf, True, tmpdir=skopeo_tmp, src_creds=htpasswd_registry.creds)
    write_auth_file(skopeo_tmp, {htpasswd_registry.host: htpasswd_registry.creds})
    assert skopeo_inspect(ref, basic_conf, True, tmpdir=skopeo_tmp) == catalog.v2img.manifest
