"""Egress through a real forward proxy (tinyproxy), its log read to see which requests went through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.cdn import start_redirecting_registry
from tests.support.forwardproxy import TinyProxy
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import free_port, raw_request
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf
from tests.support.tls import make_tls
from tests.support.tokenserver import TokenServer


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[TinyProxy]:
    with TinyProxy(tmp_path / "tinyproxy") as proxy:
        yield proxy


def pull_v2img(mirror: MirrorProcess, tmp_path: Path) -> set[str]:
    conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)
    out = tmp_path / "out"
    skopeo_copy(
        "docker.io/library/v2img:latest", out, registries_conf=conf, tmpdir=tmp_path / "s", format="dir"
    )
    return layout_digests(out)


def test_manifests_tokens_blobs_and_cdn_redirects_all_go_through_the_proxy(
    catalog: Catalog, token_server: TokenServer, tinyproxy: TinyProxy, tmp_path: Path, upstream: Registry
) -> None:
    """With http_proxy set, every request of a pull through a token-auth upstream whose blobs redirect
    to a CDN reaches its host through the proxy: each request the registry, the token server and the
    CDN saw is in the proxy's log as an absolute URI."""
    registry, cdn = start_redirecting_registry(
        tmp_path / "upstream", seed_from=upstream.root, auth=token_server.auth()
    )
    try:
        tokens_mark = len(token_server.seen)
        with MirrorProcess(tmp_path / "mirror", registry.url, env={"http_proxy": tinyproxy.url()}) as mirror:
            mark = registry.mark()
            assert catalog.v2img.blobs <= pull_v2img(mirror, tmp_path)
            seen_by_registry = [f"{registry.url}{r.path}" for r in registry.requests(mark)]
        proxied = tinyproxy.targets("GET") + tinyproxy.targets("HEAD")
        assert seen_by_registry
        assert sorted(u for u in proxied if u.startswith(registry.url)) == sorted(seen_by_registry)
        token_gets = [u for u in proxied if u.startswith(token_server.realm)]
        assert len(token_gets) == len(token_server.requests_since(tokens_mark)) >= 1
        cdn_gets = [u for u in proxied if u.startswith(cdn.url)]
        assert len(cdn_gets) == len(cdn.seen) == len(catalog.v2img.layers) + 1  # layers and config
        assert any("/manifests/" in u for u in seen_by_registry)
    finally:
        registry.stop()
        cdn.stop()


@pytest.mark.parametrize("no_proxy", ["127.0.0.0/8", "127.0.0.1", "*"])
def test_no_proxy_sends_matching_hosts_direct(
    catalog: Catalog, upstream: Registry, tinyproxy: TinyProxy, tmp_path: Path, no_proxy: str
) -> None:
    """A host NO_PROXY matches (CIDR, IP, *) is reached direct: the proxy logs nothing."""
    env = {"HTTP_PROXY": tinyproxy.url(), "NO_PROXY": no_proxy}
    with MirrorProcess(tmp_path / "mirror", upstream.url, env=env) as mirror:
        assert catalog.v2img.blobs <= pull_v2img(mirror, tmp_path)
    assert tinyproxy.requests() == []


def test_an_empty_proxy_key_goes_direct_despite_the_environment(
    catalog: Catalog, upstream: Registry, tinyproxy: TinyProxy, tmp_path: Path
) -> None:
    """`proxy = ""` (here MIRROR_PROXY for Docker Hub) overrides http_proxy: nothing goes through it."""
    env = {"http_proxy": tinyproxy.url(), "MIRROR_PROXY": ""}
    with MirrorProcess(tmp_path / "mirror", upstream.url, env=env) as mirror:
        resp = raw_request("GET", f"{mirror.url}/v2/library/v2img/manifests/latest")
        assert resp.status == 200
    assert tinyproxy.requests() == []


def test_an_https_upstream_is_reached_through_connect(
    catalog: Catalog,
    upstream: Registry,
    make_registry: Callable[..., Registry],
    make_token_server: Callable[..., TokenServer],
    tmp_path: Path,
) -> None:
    """An https registry with an https token realm is reached through CONNECT tunnels (manifests and
    tokens from the session, blobs from the transfer threads), each carrying the proxy's credentials;
    the pull verifies."""
    tls = make_tls(tmp_path / "tls")
    tokens = make_token_server(tls=tls)
    registry = make_registry(tls=tls, seed_from=upstream.root, auth=tokens.auth())
    with TinyProxy(tmp_path / "tinyproxy", credentials=("tunnel", "tunnel-pass")) as proxy:
        env = {"HTTPS_PROXY": proxy.url(with_credentials=True), "SSL_CERT_FILE": str(tls.ca)}
        with MirrorProcess(tmp_path / "mirror", registry.url, env=env) as mirror:
            assert catalog.v2img.blobs <= pull_v2img(mirror, tmp_path)
        tunnels = proxy.targets("CONNECT")
    assert f"127.0.0.1:{registry.port}" in tunnels
    assert f"127.0.0.1:{tokens.port}" in tunnels
    assert tunnels.count(f"127.0.0.1:{registry.port}") >= 2  # the session's and a transfer thread's
    assert proxy.targets("GET") == []


def test_a_proxy_refusing_or_missing_is_a_registry_error(upstream: Registry, tmp_path: Path) -> None:
    """Wrong proxy credentials (tinyproxy 1.11 answers them 401 with a Basic challenge, not 407) give
    401 UNAUTHORIZED, an unreachable proxy 503 UNAVAILABLE: registry errors, never a 500; the password
    is not logged."""
    with TinyProxy(tmp_path / "tinyproxy", credentials=("egress", "right-pass")) as proxy:
        cases = [
            (f"http://egress:wrong-pass@127.0.0.1:{proxy.port}", 401, "UNAUTHORIZED"),
            (f"http://egress:wrong-pass@127.0.0.1:{free_port()}", 503, "UNAVAILABLE"),
        ]
        for number, (proxy_url, status, code) in enumerate(cases):
            env = {"http_proxy": proxy_url}
            with MirrorProcess(tmp_path / f"mirror-{number}", upstream.url, env=env) as mirror:
                resp = raw_request("GET", f"{mirror.url}/v2/library/v2img/manifests/latest")
                log = mirror.log_path.read_text()
            assert resp.status == status
            assert json.loads(resp.body)["errors"][0]["code"] == code
            assert "wrong-pass" not in log
            assert "Traceback" not in log


def test_proxy_credentials_are_sent_and_never_shown(
    catalog: Catalog, upstream: Registry, tmp_path: Path
) -> None:
    """A proxy demanding Basic auth is passed with the URL's credentials; the password appears neither
    in the mirror's log nor in --print-config, which masks it."""
    password = "proxy-pass-5150"
    with TinyProxy(tmp_path / "tinyproxy", credentials=("egress", password)) as proxy:
        env = {"MIRROR_PROXY": proxy.url(with_credentials=True)}
        with MirrorProcess(tmp_path / "mirror", upstream.url, env=env) as mirror:
            assert catalog.v2img.blobs <= pull_v2img(mirror, tmp_path)
            log = mirror.log_path.read_text()
        assert any("/blobs/" in target for target in proxy.targets("GET"))
    assert password not in log
    printed = subprocess.run(
        [sys.executable, "-m", "mirror", "serve", "--print-config"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")},
            **env,
            "https_proxy": proxy.url(with_credentials=True),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert password not in printed
    assert f"http://***@127.0.0.1:{proxy.port}" in printed
