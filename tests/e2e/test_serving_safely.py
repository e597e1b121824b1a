"""The mirror served safely, as `mirror serve` runs and real clients use it: skopeo over verified HTTPS,
certificates renewed in place, client certificates (mTLS), htpasswd users written by `htpasswd -B`."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.support.htpasswd import htpasswd_add
from tests.support.images import ImageInfo
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import basic_auth
from tests.support.podman import Podman
from tests.support.polling import wait_until
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_auth_file, write_registries_conf
from tests.support.tls import KeyPair, TestCa, TlsFiles, fingerprint

IMAGE = "docker.io/library/v2img:latest"


def cert_dir(path: Path, ca: Path, client: KeyPair | None = None) -> Path:
    """A containers/image cert dir: `ca.crt`, and `client.cert`/`client.key` for mTLS."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, path / "ca.crt")
    if client is not None:
        shutil.copy(client.cert, path / "client.cert")
        shutil.copy(client.key, path / "client.key")
    return path


def pull(mirror: MirrorProcess, tmp_path: Path, certs: Path) -> Path:
    """skopeo copy IMAGE through the mirror as a verified HTTPS mirror (no `insecure`); the copy's dir."""
    try_pull(mirror, tmp_path, certs, check=True)
    return tmp_path / "out"


def try_pull(
    mirror: MirrorProcess, tmp_path: Path, certs: Path, *, check: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """skopeo copy IMAGE through the mirror as a verified HTTPS mirror, returning how it went."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    conf = write_registries_conf(tmp_path / "registries.conf", mirror.host, insecure=False)
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    return skopeo_copy(
        IMAGE,
        out,
        registries_conf=conf,
        tmpdir=tmp_path / "skopeo",
        format="dir",
        extra_args=["--src-cert-dir", str(certs)],
        check=check,
    )


def statuses(mirror: MirrorProcess) -> list[int]:
    """The status of every request line the mirror logged."""
    lines = (json.loads(line) for line in mirror.log_lines() if line.startswith("{"))
    return [e["status"] for e in lines if e.get("event") == "request"]


def test_skopeo_pulls_through_the_https_mirror_with_verification_on(
    upstream: Registry, server_tls: TlsFiles, v2img: ImageInfo, tmp_path: Path
) -> None:
    """A registries.conf mirror without `insecure` and the CA in skopeo's cert dir: the pull verifies the
    mirror's certificate and gets every blob, from the mirror."""
    with MirrorProcess(tmp_path / "mirror", upstream.url, tls=server_tls) as mirror:
        mark = upstream.mark()
        out = pull(mirror, tmp_path, cert_dir(tmp_path / "certs", server_tls.ca))
        assert v2img.blobs <= layout_digests(out)
        assert upstream.blob_gets(mark), "the blobs came through the mirror"
        assert 200 in statuses(mirror)


def test_a_client_trusting_another_ca_does_not_pull_from_the_mirror(
    upstream: Registry, server_tls: TlsFiles, tmp_path: Path
) -> None:
    """skopeo trusting another CA refuses the mirror's certificate (then fails on docker.io, unreachable
    here): no request reached the mirror's handlers or the upstream."""
    other = TestCa(tmp_path / "other", "some other CA")
    with MirrorProcess(tmp_path / "mirror", upstream.url, tls=server_tls) as mirror:
        mark = upstream.mark()
        result = try_pull(mirror, tmp_path, cert_dir(tmp_path / "certs", other.ca))
        assert result.returncode != 0
        assert b"certificate" in result.stderr
        assert upstream.requests(mark) == []
        assert [s for s in statuses(mirror) if s != 200] == []  # only the readiness probe got answers


def test_a_certificate_renewed_in_place_is_served_without_a_restart(
    upstream: Registry, ca: TestCa, server_tls: TlsFiles, tmp_path: Path
) -> None:
    """New files moved over the old paths: a new handshake shows the new certificate, the PID is the
    same, and a keep-alive connection opened before the renewal goes on working."""
    with MirrorProcess(tmp_path / "mirror", upstream.url, tls=server_tls) as mirror:
        assert mirror.proc is not None
        pid = mirror.proc.pid
        context = ssl.create_default_context(cafile=str(ca.ca))
        before = http.client.HTTPSConnection("127.0.0.1", mirror.port, timeout=10, context=context)
        before.request("GET", "/v2/")
        assert before.getresponse().read() == b"{}"
        renewed = ca.issue("renewed")
        wanted = fingerprint(renewed.cert.read_bytes())
        os.replace(renewed.cert, server_tls.cert)
        os.replace(renewed.key, server_tls.key)

        def served_cert() -> str:
            conn = http.client.HTTPSConnection("127.0.0.1", mirror.port, timeout=10, context=context)
            try:
                conn.connect()
                assert isinstance(conn.sock, ssl.SSLSocket)
                der = conn.sock.getpeercert(binary_form=True)
                assert der is not None
                return fingerprint(der)
            finally:
                conn.close()

        wait_until(lambda: served_cert() == wanted, what="the renewed certificate in a new handshake")
        before.request("GET", "/v2/")
        assert before.getresponse().status == 200, "the connection opened before the renewal still works"
        before.close()
        assert mirror.proc.pid == pid
        assert mirror.proc.poll() is None
        assert mirror.metric("mirror_tls_reloads_total", outcome="ok") >= 1


def test_mtls_a_client_certificate_from_the_ca_pulls_and_none_is_refused(
    upstream: Registry, ca: TestCa, server_tls: TlsFiles, v2img: ImageInfo, tmp_path: Path
) -> None:
    """With --tls-client-ca: skopeo with client.cert/client.key from that CA pulls; without, it is refused
    at the handshake and the upstream sees nothing."""
    node = ca.issue("node", "node-1", client=True)
    with MirrorProcess(
        tmp_path / "mirror",
        upstream.url,
        tls=server_tls,
        client_cert=node,
        args=["--tls-client-ca", str(ca.ca)],
    ) as mirror:
        out = pull(mirror, tmp_path / "with", cert_dir(tmp_path / "certs-with", ca.ca, node))
        assert v2img.blobs <= layout_digests(out)
        mark = upstream.mark()
        refused = try_pull(mirror, tmp_path / "without", cert_dir(tmp_path / "certs-without", ca.ca))
        assert refused.returncode != 0
        assert b"Mirrors also failed" in refused.stderr
        assert upstream.requests(mark) == []
        assert [s for s in statuses(mirror) if s != 200] == [], "no request got past the handshake"
    logged = [json.loads(line) for line in mirror.log_lines() if line.startswith("{")]
    assert {e.get("client_cert") for e in logged if e.get("kind") == "blob"} == {"CN=node-1"}


@pytest.fixture
def authed_mirror(upstream: Registry, server_tls: TlsFiles, tmp_path: Path) -> MirrorProcess:
    htpasswd = htpasswd_add(tmp_path / "htpasswd", "alice", "wonderland", create=True)
    env = {"MIRROR_AUTH_HTPASSWD": str(htpasswd), "MIRROR_RELOAD_INTERVAL": "0.2"}
    return MirrorProcess(tmp_path / "mirror", upstream.url, env, tls=server_tls)


def test_htpasswd_skopeo_with_an_auth_file_entry_for_the_mirror_pulls(
    authed_mirror: MirrorProcess, server_tls: TlsFiles, v2img: ImageInfo, tmp_path: Path
) -> None:
    """skopeo with `auths["127.0.0.1:PORT"]` in its auth file pulls through the TLS, htpasswd mirror,
    and the mirror logs who pulled what."""
    with authed_mirror as mirror:
        write_auth_file(tmp_path / "skopeo", {mirror.host: ("alice", "wonderland")})
        out = pull(mirror, tmp_path, cert_dir(tmp_path / "certs", server_tls.ca))
        assert v2img.blobs <= layout_digests(out)
    lines = [json.loads(line) for line in mirror.log_lines() if line.startswith("{")]
    pulled = [e for e in lines if e.get("event") == "request" and e.get("kind") == "manifest"]
    assert pulled
    assert {(e["identity"], e["auth"]) for e in pulled} == {("alice", "basic")}
    assert all(e["image"].startswith("docker.io/library/v2img") for e in pulled)
    assert all(e["user_agent"].startswith("skopeo/") for e in pulled)


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_htpasswd_without_or_with_a_wrong_password_is_401_and_nothing_goes_upstream(
    authed_mirror: MirrorProcess,
    upstream: Registry,
    server_tls: TlsFiles,
    password: str | None,
    tmp_path: Path,
) -> None:
    """skopeo without an auth entry, or with a wrong password, gets 401 from the mirror (then fails on
    docker.io): the upstream sees no request, and the password is not in the log."""
    with authed_mirror as mirror:
        if password is not None:
            write_auth_file(tmp_path / "skopeo", {mirror.host: ("alice", password)})
        mark = upstream.mark()
        result = try_pull(mirror, tmp_path, cert_dir(tmp_path / "certs", server_tls.ca))
        assert result.returncode != 0
        assert upstream.requests(mark) == []
        assert 401 in statuses(mirror)
        reason = "missing" if password is None else "wrong"
        assert mirror.metric("mirror_auth_failures_total", reason=reason) >= 1
    assert "wrong-password" not in mirror.log_path.read_text()


def test_htpasswd_edited_while_running_lets_the_new_user_pull(
    authed_mirror: MirrorProcess, server_tls: TlsFiles, v2img: ImageInfo, tmp_path: Path
) -> None:
    """`htpasswd -B` adds bob while the mirror runs: within the reload interval bob's pull succeeds."""
    with authed_mirror as mirror:
        htpasswd_add(tmp_path / "htpasswd", "bob", "builder")
        headers = {"Authorization": basic_auth("bob", "builder")}
        wait_until(lambda: mirror.get("/v2/", headers).status == 200, what="bob admitted after the edit")
        write_auth_file(tmp_path / "skopeo", {mirror.host: ("bob", "builder")})
        out = pull(mirror, tmp_path, cert_dir(tmp_path / "certs", server_tls.ca))
        assert v2img.blobs <= layout_digests(out)


def test_podman_pulls_through_the_https_htpasswd_mirror(
    authed_mirror: MirrorProcess, server_tls: TlsFiles, v2img: ImageInfo, tmp_path: Path
) -> None:
    """podman 4.3 with the mirror in registries.conf (verified TLS, CA in --cert-dir) and alice in its
    auth file pulls the image; the image's ID is the config digest the upstream holds."""
    podman = Podman(tmp_path / "podman")
    with authed_mirror as mirror:
        conf = write_registries_conf(tmp_path / "registries.conf", mirror.host, insecure=False)
        auth = write_auth_file(tmp_path / "auth", {mirror.host: ("alice", "wonderland")})
        certs = cert_dir(tmp_path / "certs", server_tls.ca)
        podman.run(["pull", "--cert-dir", str(certs), "--authfile", str(auth), IMAGE], conf)
        found = podman.run(["image", "inspect", "--format", "{{.Id}}", IMAGE], conf).stdout.decode().strip()
        assert f"sha256:{found}" == v2img.config_digest
        assert mirror.metric("mirror_requests_total", kind="blob", status="200") >= 1
