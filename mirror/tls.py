"""HTTPS for the mirror's own listener: the server context, its reload on renewal, client certificates.

One listening context is handed to the server; its SNI callback, which OpenSSL runs for every
ClientHello (with or without a server name), hands each new handshake the newest context. A renewed
certificate therefore takes effect on the next handshake, while connections already open keep theirs.
A renewal that cannot be loaded (unreadable, not PEM, key not matching the certificate) keeps the
previous context and logs `tls_reload_failed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from mirror import filewatch, keys
from mirror.config import ConfigError, Settings

log = structlog.get_logger("mirror.tls")

#: TLS 1.2 suites: forward secret AEADs only (TLS 1.3's suites are all of that kind and fixed by OpenSSL).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


class TlsError(ConfigError):
    """A certificate, key or client CA file that cannot be used; the message names the file."""


def server_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """A TLS >= 1.2 server context for `cert`/`key`; with `client_ca`, a client certificate it signed is
    required at the handshake. Blocking (reads files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load tls_cert {cert} with tls_key {key}: {_reason(exc)}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot load tls_client_ca {client_ca}: {_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def fingerprint(cert: Path) -> str:
    """sha256 of the first certificate in a PEM file (what `openssl x509 -fingerprint -sha256` shows)."""
    text = cert.read_text(errors="replace")
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    der = ssl.PEM_cert_to_DER_cert(text[start : end + len("-----END CERTIFICATE-----")])
    return "sha256:" + hashlib.sha256(der).hexdigest()


def peer_subject(transport: asyncio.BaseTransport | None) -> str | None:
    """The verified client certificate's subject as `CN=...,O=...`, or None without one."""
    if transport is None:
        return None
    cert: dict[str, Any] | None = transport.get_extra_info("peercert")
    if not cert:
        return None
    parts = [f"{_SHORT.get(k, k)}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    return ",".join(parts) or None


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C"}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


class ServerTls:
    """The listener's TLS: built from the settings at start-up, rebuilt when its files change."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None, interval: float) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._interval = interval
        self._paths = [p for p in (cert, key, client_ca) if p is not None]
        self._since = filewatch.signature(self._paths)
        self.context = server_context(cert, key, client_ca)
        self.context.sni_callback = self._choose
        self._current = self.context
        self.fingerprint = fingerprint(cert)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerTls | None:
        """None for plain HTTP; raises TlsError for files that cannot be used. Blocking."""
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        return cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca, settings.reload_interval)

    def _choose(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        if conn.context is not self._current:
            conn.context = self._current

    async def reload(self, app: web.Application) -> None:
        """Build a context from the files as they are now and use it for new handshakes; keep the old
        one if that fails."""
        metrics = app[keys.METRICS]
        failure: str | None = None
        try:
            context = await asyncio.to_thread(server_context, self._cert, self._key, self._client_ca)
            printed = await asyncio.to_thread(fingerprint, self._cert)
        except (TlsError, OSError, ValueError) as exc:
            failure = str(exc)
        if failure is not None:
            metrics.tls_reloads.labels("error").inc()
            log.error("tls_reload_failed", error=failure, kept=self.fingerprint)
            return
        self._current, self.fingerprint = context, printed
        metrics.tls_reloads.labels("ok").inc()
        log.info("tls_certificate_loaded", cert=str(self._cert), fingerprint=printed)

    async def watching(self, app: web.Application) -> AsyncIterator[None]:
        """`cleanup_ctx`: poll the files for the app's lifetime (one tracked task)."""
        log.info("tls_certificate_loaded", cert=str(self._cert), fingerprint=self.fingerprint)
        task = asyncio.create_task(
            filewatch.watch(self._paths, lambda: self.reload(app), self._since, self._interval),
            name="tls reload",
        )
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
