"""Doctor's probes against a hand-written server: the faults a real mirror does not produce on demand."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from mirror import oci
from mirror.commands.probes import CONTAINERD, DOCKER, MAX_PROBE_BYTES, PODMAN, Endpoint, probe
from tests.support.net import BackgroundServer
from tests.support.tls import TlsFiles, make_tls

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
IMAGE = oci.parse_image_ref("docker.io/library/probe:1")


class Fake(BackgroundServer):
    """A registry answering every manifest request with MANIFEST, shaped by `mode`."""

    def __init__(self, mode: str, tls: TlsFiles | None = None) -> None:
        self.mode = mode
        self.seen: list[tuple[str, str]] = []
        self.authorization: list[str | None] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def answer(self, body: bool) -> None:
                fake.seen.append((self.command, self.path))
                fake.authorization.append(self.headers.get("Authorization"))
                if fake.mode == "stall":
                    fake.release.wait(10)
                    return
                body_bytes = b" " * (MAX_PROBE_BYTES + 1) if fake.mode == "huge" else MANIFEST
                self.send_response(200)
                self.send_header("Content-Type", oci.OCI_MANIFEST)
                if not (fake.mode == "no-digest-on-head" and self.command == "HEAD"):
                    claimed = "sha256:" + "0" * 64 if fake.mode == "wrong-digest" else DIGEST
                    self.send_header("Docker-Content-Digest", claimed)
                self.send_header("Content-Length", str(len(body_bytes)))
                self.end_headers()
                if body:
                    self.wfile.write(body_bytes)

            def do_GET(self) -> None:
                self.answer(body=True)

            def do_HEAD(self) -> None:
                self.answer(body=False)

        super().__init__(Handler, "probe-test", tls=tls)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(url=f"{self.scheme}://127.0.0.1:{self.port}")


@pytest.fixture
def make_fake() -> Iterator[type[Fake]]:
    started: list[Fake] = []

    class Tracked(Fake):
        def __init__(self, mode: str, tls: TlsFiles | None = None) -> None:
            super().__init__(mode, tls)
            started.append(self)

    yield Tracked
    for fake in started:
        fake.release.set()
        fake.stop()


def test_containerd_probe_heads_then_gets_by_digest_with_ns(make_fake: type[Fake]) -> None:
    """containerd style: HEAD by tag, GET by the digest it answered, both with ?ns=docker.io."""
    fake = make_fake("ok")
    result = probe(fake.endpoint, CONTAINERD, IMAGE)
    assert result.ok
    assert result.digest == DIGEST
    assert fake.seen == [
        ("HEAD", "/v2/library/probe/manifests/1?ns=docker.io"),
        ("GET", f"/v2/library/probe/manifests/{DIGEST}?ns=docker.io"),
    ]


def test_a_head_without_digest_is_asked_again_by_tag(make_fake: type[Fake]) -> None:
    """When HEAD lacks Docker-Content-Digest the GET goes by tag, as containerd does."""
    fake = make_fake("no-digest-on-head")
    assert probe(fake.endpoint, CONTAINERD, IMAGE).ok
    assert fake.seen[1] == ("GET", "/v2/library/probe/manifests/1?ns=docker.io")


def test_podman_probe_pings_then_gets_by_tag_without_ns(make_fake: type[Fake]) -> None:
    """podman style: GET /v2/, then GET by tag; no HEAD, no ?ns=."""
    fake = make_fake("ok")
    assert probe(fake.endpoint, PODMAN, IMAGE).ok
    assert fake.seen == [("GET", "/v2/"), ("GET", "/v2/library/probe/manifests/1")]


def test_a_location_path_prefixes_the_repository(make_fake: type[Fake]) -> None:
    """registries.conf `location = "host/ghcr.io"` asks for /v2/ghcr.io/<name>/..."""
    fake = make_fake("ok")
    endpoint = Endpoint(url=fake.endpoint.url, path_prefix="ghcr.io")
    assert probe(endpoint, PODMAN, oci.parse_image_ref("ghcr.io/acme/app:2")).ok
    assert fake.seen[1] == ("GET", "/v2/ghcr.io/acme/app/manifests/2")


def test_a_digest_header_that_does_not_match_the_body_fails(make_fake: type[Fake]) -> None:
    """A mirror whose Docker-Content-Digest lies is a failed probe naming both digests."""
    fake = make_fake("wrong-digest")
    result = probe(fake.endpoint, DOCKER, IMAGE)
    assert not result.ok
    assert result.error is not None
    assert DIGEST in result.error


def test_a_mirror_that_never_answers_fails_at_the_timeout(make_fake: type[Fake]) -> None:
    """A stalled mirror fails the probe with a timeout instead of hanging the doctor."""
    fake = make_fake("stall")
    result = probe(fake.endpoint, CONTAINERD, IMAGE, timeout=0.2)
    assert result.error is not None
    assert "timed out" in result.error


def test_a_missing_ca_file_is_a_failed_probe_not_a_crash() -> None:
    """An https endpoint whose CA file does not exist is reported as the probe's error."""
    endpoint = Endpoint(url="https://127.0.0.1:1", ca=("/nonexistent/ca.crt",))
    result = probe(endpoint, CONTAINERD, IMAGE)
    assert result.error is not None
    assert "FileNotFoundError" in result.requests[0]


def test_a_manifest_larger_than_the_limit_fails(make_fake: type[Fake]) -> None:
    """A body over MAX_PROBE_BYTES is refused (the mirror itself never serves one that large)."""
    fake = make_fake("huge")
    result = probe(fake.endpoint, PODMAN, IMAGE)
    assert result.error is not None
    assert f"larger than {MAX_PROBE_BYTES} bytes" in result.error


def test_an_https_mirror_is_verified_against_the_runtimes_ca(make_fake: type[Fake], tmp_path: Path) -> None:
    """With hosts.toml's `ca` the probe verifies the mirror's certificate; without it, it fails."""
    fake = make_fake("ok", make_tls(tmp_path / "tls"))
    trusted = dataclasses.replace(fake.endpoint, ca=(str(tmp_path / "tls" / "ca.pem"),))
    assert probe(trusted, CONTAINERD, IMAGE).ok
    untrusted = probe(fake.endpoint, CONTAINERD, IMAGE)
    assert untrusted.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error


def test_skip_verify_accepts_an_unknown_certificate(make_fake: type[Fake], tmp_path: Path) -> None:
    """hosts.toml's skip_verify (registries.conf insecure) probes without verifying the certificate."""
    fake = make_fake("ok", make_tls(tmp_path / "tls"))
    assert probe(dataclasses.replace(fake.endpoint, skip_verify=True), CONTAINERD, IMAGE).ok


def test_host_headers_are_sent_on_every_probe_request(make_fake: type[Fake]) -> None:
    """hosts.toml `[host.header]` values (e.g. the mirror's client auth) go with each request."""
    fake = make_fake("ok")
    endpoint = dataclasses.replace(fake.endpoint, headers=(("Authorization", "Basic bm9kZTpzZWNyZXQ="),))
    assert probe(endpoint, CONTAINERD, IMAGE).ok
    assert fake.authorization == ["Basic bm9kZTpzZWNyZXQ="] * 2
