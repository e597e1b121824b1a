"""The real runtimes pull through the mirror served safely: containerd 1.6 over verified HTTPS with
Basic credentials in hosts.toml, and the Docker engine 20.10 over HTTPS with a client certificate (mTLS),
both private (tests/support/runtimes.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.htpasswd import htpasswd_add
from tests.support.images import ImageInfo
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import basic_auth
from tests.support.registry import Registry
from tests.support.runtimes import Containerd, Dockerd, available, write_hosts_dir
from tests.support.tls import TestCa, TlsFiles

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

# $1: a directory bind-mounted over /etc/docker (in the daemon's private mount namespace only), so
# dockerd finds certs.d/HOST:PORT there; then dockerd's argv, exec'd (same PID).
_ETC_DOCKER_SCRIPT = 'set -e; mount --bind "$1" /etc/docker; shift; exec "$@"'


class DockerdWithCerts(Dockerd):
    """dockerd that reads `etc_docker/certs.d` as /etc/docker/certs.d, where Docker looks for a mirror's
    CA and client certificate (it has no flag for them)."""

    def __init__(self, workdir: Path, daemon_json: dict[str, object], etc_docker: Path) -> None:
        super().__init__(workdir, daemon_json)
        self.etc_docker = etc_docker

    def _argv(self) -> list[str]:
        return ["sh", "-c", _ETC_DOCKER_SCRIPT, "sh", str(self.etc_docker), *super()._argv()]


def _requests(mirror: MirrorProcess) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in mirror.log_lines() if line.startswith("{"))
    return [
        e for e in lines if e.get("event") == "request" and str(e.get("path", "")).startswith("/v2/library")
    ]


def test_containerd_pulls_over_https_with_basic_credentials_in_hosts_toml(
    tmp_path: Path, upstream: Registry, server_tls: TlsFiles, v2img: ImageInfo
) -> None:
    """hosts.toml `[host."https://127.0.0.1:PORT"]` with `ca` and an Authorization `header`: ctr pulls
    the image (same digest) through the TLS, htpasswd mirror, and every request is logged as alice's."""
    htpasswd = htpasswd_add(tmp_path / "htpasswd", "alice", "wonderland", create=True)
    env = {"MIRROR_AUTH_HTPASSWD": str(htpasswd)}
    with MirrorProcess(tmp_path / "mirror", upstream.url, env, tls=server_tls) as mirror:
        hosts = write_hosts_dir(
            tmp_path / "certs.d",
            mirror.url,
            ca=server_tls.ca,
            headers={"Authorization": basic_auth("alice", "wonderland")},
        )
        with Containerd(tmp_path / "containerd") as ctd:
            assert ctd.pull("docker.io/library/v2img:latest", hosts) == v2img.manifest_digest
    seen = _requests(mirror)
    assert {e["status"] for e in seen} <= {200}
    assert {(e["identity"], e["auth"]) for e in seen} == {("alice", "basic")}
    assert {e["kind"] for e in seen} == {"manifest", "blob"}


def test_containerd_without_the_header_is_refused_and_nothing_goes_upstream(
    tmp_path: Path, upstream: Registry, server_tls: TlsFiles
) -> None:
    """The same hosts.toml without the Authorization header: 401 from the mirror, the pull fails (its
    fallback, Docker Hub, is unreachable here), the upstream sees no request."""
    htpasswd = htpasswd_add(tmp_path / "htpasswd", "alice", "wonderland", create=True)
    env = {"MIRROR_AUTH_HTPASSWD": str(htpasswd)}
    with MirrorProcess(tmp_path / "mirror", upstream.url, env, tls=server_tls) as mirror:
        hosts = write_hosts_dir(tmp_path / "certs.d", mirror.url, ca=server_tls.ca)
        mark = upstream.mark()
        with Containerd(tmp_path / "containerd") as ctd, pytest.raises(AssertionError):
            ctd.pull("docker.io/library/v2img:latest", hosts)
        assert upstream.requests(mark) == []
    assert {e["status"] for e in _requests(mirror)} == {401}


def test_docker_pulls_over_https_with_a_client_certificate(
    tmp_path: Path, upstream: Registry, ca: TestCa, server_tls: TlsFiles, v2img: ImageInfo
) -> None:
    """Docker sends its Docker Hub credentials, not the mirror's, so mTLS is how it authenticates:
    certs.d/HOST:PORT/{ca.crt,client.cert,client.key} and `registry-mirrors: ["https://..."]` pull the
    image through a mirror that requires client certificates; the log names the node. On ::1: Docker
    treats 127.0.0.0/8 as insecure and then reads no certs.d at all."""
    node = ca.issue("node", "docker-node-1", client=True)
    with MirrorProcess(
        tmp_path / "mirror",
        upstream.url,
        tls=server_tls,
        client_cert=node,
        args=["--tls-client-ca", str(ca.ca)],
        ip="::1",
    ) as mirror:
        certs = tmp_path / "etc-docker" / "certs.d" / mirror.host
        certs.mkdir(parents=True)
        shutil.copy(ca.ca, certs / "ca.crt")
        shutil.copy(node.cert, certs / "client.cert")
        shutil.copy(node.key, certs / "client.key")
        daemon_json: dict[str, object] = {"registry-mirrors": [mirror.url]}
        with DockerdWithCerts(tmp_path / "dockerd", daemon_json, tmp_path / "etc-docker") as engine:
            pulled = engine.pull("library/v2img:latest")
    assert pulled["Id"] == v2img.config_digest
    seen = _requests(mirror)
    assert seen
    assert {e["client_cert"] for e in seen} == {"CN=docker-node-1"}
