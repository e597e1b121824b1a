"""The mirror's own HTTPS listener, in-process on a real socket: TLS versions, verification, certificate
renewal in place (and a broken one), client certificates (mTLS), blobs over TLS."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from mirror import keys
from mirror.app import serving
from mirror.config import Settings
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually
from tests.support.tls import KeyPair, TestCa, fingerprint


@dataclass
class TlsMirror:
    """A mirror served over HTTPS, the CA that signed its certificate, and the certificate files."""

    server: TestServer
    ca: TestCa
    pair: KeyPair

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


TlsMirrorFactory = Callable[..., Awaitable[TlsMirror]]


@pytest.fixture
async def make_tls_mirror(
    tmp_path: Path,
    make_settings: Callable[..., Awaitable[Settings]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> TlsMirrorFactory:
    """Start a mirror on https://127.0.0.1 (fake upstream); `client_ca` requires client certificates."""

    async def start(client_ca: bool = False, **overrides: Any) -> TlsMirror:
        ca = await asyncio.to_thread(TestCa, tmp_path / "ca")
        pair = await asyncio.to_thread(ca.issue, "server")
        settings = await make_settings(
            tls_cert=str(pair.cert),
            tls_key=str(pair.key),
            tls_client_ca=str(ca.ca) if client_ca else None,
            reload_interval=0.05,
            **overrides,
        )
        app, context = await asyncio.to_thread(serving, settings)
        server = await aiohttp_server(app, ssl=context)
        return TlsMirror(server, ca, pair)

    return start


def client_context(
    ca: Path, client: KeyPair | None = None, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if max_version is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = max_version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer what the mirror must refuse
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def handshake(port: int, context: ssl.SSLContext) -> tuple[str, bytes]:
    """Connect and handshake; the negotiated TLS version and the server certificate (DER)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cert = tls.getpeercert(binary_form=True)
        assert cert is not None
        return str(tls.version()), cert


def https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def replace_in_place(target: KeyPair, new: KeyPair) -> None:
    """What cert-manager does to a mounted Secret: new files moved over the old paths."""
    os.replace(new.cert, target.cert)
    os.replace(new.key, target.key)


async def test_https_answers_the_registry_api_with_tls_1_2_or_newer(
    make_tls_mirror: TlsMirrorFactory,
) -> None:
    """A client trusting the mirror's CA gets /v2/ over TLS 1.2 or 1.3 with verification on."""
    mirror = await make_tls_mirror()
    version, _ = await asyncio.to_thread(handshake, mirror.port, client_context(mirror.ca.ca))
    assert version in ("TLSv1.2", "TLSv1.3")
    status, _ = await asyncio.to_thread(https_get, mirror.port, "/v2/", client_context(mirror.ca.ca))
    assert status == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_1_1_is_refused_at_the_handshake(make_tls_mirror: TlsMirrorFactory) -> None:
    """A client that offers at most TLS 1.1 sends its hello and is refused by the mirror (asyncio closes
    the connection without flushing the alert, so the client sees EOF or a protocol-version alert)."""
    mirror = await make_tls_mirror()
    old = client_context(mirror.ca.ca, max_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ssl.SSLError) as refused:
        await asyncio.to_thread(handshake, mirror.port, old)
    reason = str(refused.value).upper()
    assert isinstance(refused.value, ssl.SSLEOFError) or "PROTOCOL_VERSION" in reason
    assert "NO_PROTOCOLS_AVAILABLE" not in reason, "the client itself must have offered TLS 1.1"


async def test_tls_1_2_without_a_forward_secret_aead_cipher_is_refused(
    make_tls_mirror: TlsMirrorFactory,
) -> None:
    """A TLS 1.2 client offering only CBC suites (ECDHE-ECDSA-AES128-SHA, -SHA256) gets no handshake."""
    mirror = await make_tls_mirror()
    old = client_context(mirror.ca.ca)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(handshake, mirror.port, old)
    modern = client_context(mirror.ca.ca)
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    assert (await asyncio.to_thread(handshake, mirror.port, modern))[0] == "TLSv1.2"


async def test_a_client_trusting_another_ca_fails_verification(
    make_tls_mirror: TlsMirrorFactory, tmp_path: Path
) -> None:
    """A client that trusts only some other CA refuses the mirror's certificate."""
    mirror = await make_tls_mirror()
    other = await asyncio.to_thread(TestCa, tmp_path / "other", "some other CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(handshake, mirror.port, client_context(other.ca))


async def test_a_certificate_renewed_in_place_is_used_by_the_next_handshake(
    make_tls_mirror: TlsMirrorFactory,
) -> None:
    """New files moved over the old paths: the next handshake shows the new certificate, no restart."""
    mirror = await make_tls_mirror()
    context = client_context(mirror.ca.ca)
    _, before = await asyncio.to_thread(handshake, mirror.port, context)
    renewed = await asyncio.to_thread(mirror.ca.issue, "renewed")
    wanted = fingerprint(await asyncio.to_thread(renewed.cert.read_bytes))
    await asyncio.to_thread(replace_in_place, mirror.pair, renewed)

    async def shows_new() -> bool:
        _, cert = await asyncio.to_thread(handshake, mirror.port, context)
        return fingerprint(cert) == wanted

    await eventually(shows_new)
    assert fingerprint(before) != wanted
    assert mirror.server.app[keys.METRICS].tls_reloads.labels("ok")._value.get() >= 1


async def test_a_blob_download_in_flight_finishes_across_a_renewal(
    make_tls_mirror: TlsMirrorFactory, fake: FakeUpstream
) -> None:
    """A blob streaming over TLS when the certificate is renewed completes with the right bytes."""
    mirror = await make_tls_mirror()
    data = random.Random(3).randbytes(3 * 1024 * 1024)
    digest = fake.add_blob(data)
    fake.faults[digest] = "stall_midway"
    context = client_context(mirror.ca.ca)
    renewed = await asyncio.to_thread(mirror.ca.issue, "renewed")
    wanted = fingerprint(await asyncio.to_thread(renewed.cert.read_bytes))
    url = f"https://127.0.0.1:{mirror.port}/v2/library/x/blobs/{digest}"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as resp:
        first = await resp.content.readexactly(1024)
        await asyncio.to_thread(replace_in_place, mirror.pair, renewed)

        async def shows_new() -> bool:
            _, cert = await asyncio.to_thread(handshake, mirror.port, context)
            return fingerprint(cert) == wanted

        await eventually(shows_new)
        fake.release.set()
        body = first + await resp.read()
    assert hashlib.sha256(body).hexdigest() == digest.removeprefix("sha256:")


async def test_a_broken_renewal_keeps_the_old_certificate_and_logs_an_error(
    make_tls_mirror: TlsMirrorFactory,
) -> None:
    """A renewed certificate whose key does not match: the old pair stays in use, tls_reload_failed is
    logged and counted."""
    mirror = await make_tls_mirror()
    context = client_context(mirror.ca.ca)
    _, before = await asyncio.to_thread(handshake, mirror.port, context)
    other = await asyncio.to_thread(mirror.ca.issue, "other")
    errors = mirror.server.app[keys.METRICS].tls_reloads.labels("error")
    with capture_logs() as logs:
        await asyncio.to_thread(os.replace, other.key, mirror.pair.key)  # the key alone: a mismatched pair
        await eventually(lambda: errors._value.get() >= 1)
    _, after = await asyncio.to_thread(handshake, mirror.port, context)
    assert fingerprint(after) == fingerprint(before)
    failed = [e for e in logs if e["event"] == "tls_reload_failed"]
    assert failed
    assert failed[0]["log_level"] == "error"
    assert failed[0]["kept"] == fingerprint(before)


async def test_mtls_lets_a_client_with_a_certificate_from_the_ca_in_and_logs_its_subject(
    make_tls_mirror: TlsMirrorFactory,
) -> None:
    """With tls_client_ca, a client certificate that CA signed gets /v2/, and the log names its subject."""
    mirror = await make_tls_mirror(client_ca=True)
    node = await asyncio.to_thread(mirror.ca.issue, "node", "node-7", client=True)
    with capture_logs() as logs:
        status, _ = await asyncio.to_thread(
            https_get, mirror.port, "/v2/", client_context(mirror.ca.ca, node)
        )
    assert status == 200
    line = next(e for e in logs if e["event"] == "request")
    assert (line["identity"], line["auth"], line["client_cert"]) == ("CN=node-7", "cert", "CN=node-7")


async def test_mtls_refuses_a_client_without_a_certificate_at_the_handshake(
    make_tls_mirror: TlsMirrorFactory,
) -> None:
    """With tls_client_ca, a client presenting no certificate never gets an HTTP answer."""
    mirror = await make_tls_mirror(client_ca=True)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.to_thread(https_get, mirror.port, "/v2/", client_context(mirror.ca.ca))


async def test_mtls_refuses_a_client_certificate_from_another_ca(
    make_tls_mirror: TlsMirrorFactory, tmp_path: Path
) -> None:
    """With tls_client_ca, a client certificate some other CA signed is refused at the handshake."""
    mirror = await make_tls_mirror(client_ca=True)
    other = await asyncio.to_thread(TestCa, tmp_path / "other", "some other CA")
    stranger = await asyncio.to_thread(other.issue, "stranger", "stranger", client=True)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.to_thread(https_get, mirror.port, "/v2/", client_context(mirror.ca.ca, stranger))


async def test_blobs_over_tls_are_exact_on_a_miss_and_on_a_hit(
    make_tls_mirror: TlsMirrorFactory, fake: FakeUpstream
) -> None:
    """sendfile cannot write into TLS: the copy path serves the exact bytes, cold and cached, with Range."""
    mirror = await make_tls_mirror()
    data = random.Random(5).randbytes(2 * 1024 * 1024 + 11)
    digest = fake.add_blob(data)
    context = client_context(mirror.ca.ca)
    url = f"https://127.0.0.1:{mirror.port}/v2/library/x/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(url, ssl=context) as resp:
                assert await resp.read() == data
        async with session.get(url, ssl=context, headers={"Range": "bytes=1000-"}) as resp:
            assert resp.status == 206
            assert await resp.read() == data[1000:]
    assert len(fake.requests("GET", "/blobs/")) == 1


async def test_mtls_still_holds_after_a_renewal(make_tls_mirror: TlsMirrorFactory) -> None:
    """Once a renewed certificate is in use, a client certificate from the CA still gets in and a client
    without one is still refused."""
    mirror = await make_tls_mirror(client_ca=True)
    node = await asyncio.to_thread(mirror.ca.issue, "node", "node-7", client=True)
    with_cert = client_context(mirror.ca.ca, node)
    renewed = await asyncio.to_thread(mirror.ca.issue, "renewed")
    wanted = fingerprint(await asyncio.to_thread(renewed.cert.read_bytes))
    await asyncio.to_thread(replace_in_place, mirror.pair, renewed)

    async def shows_new() -> bool:
        _, cert = await asyncio.to_thread(handshake, mirror.port, with_cert)
        return fingerprint(cert) == wanted

    await eventually(shows_new)
    assert (await asyncio.to_thread(https_get, mirror.port, "/v2/", with_cert))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.to_thread(https_get, mirror.port, "/v2/", client_context(mirror.ca.ca))
