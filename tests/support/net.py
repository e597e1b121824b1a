"""Ports, readiness polling and a tiny synchronous HTTP client that speaks registry auth."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.tls import KeyPair, TlsFiles

DEFAULT_OK_STATUSES: frozenset[int] = frozenset({200, 401})
USER_AGENT = "mirror-test-support"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` (127.0.0.1, or ::1) that was free a moment ago (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:5000`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class HttpResponse:
    """A fully read HTTP response; header names are lower-cased."""

    status: int
    headers: dict[str, str]
    body: bytes
    all_headers: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> object:
        """Decode the body as JSON."""
        return json.loads(self.body)


def basic_auth(username: str, password: str) -> str:
    """Return an Authorization header value for HTTP Basic."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """Split a WWW-Authenticate value into (scheme lower-cased, params)."""
    scheme, _, rest = value.partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def raw_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
    cafile: Path | None = None,
    client_cert: KeyPair | None = None,
) -> HttpResponse:
    """Send one request (no redirects followed, no auth retry) and read the whole response; an https
    URL is verified against `cafile` (else the system's CAs), presenting `client_cert` if given."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname is None:
        raise ValueError(f"only http and https URLs are supported: {url}")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if client_cert is not None:
            context.load_cert_chain(client_cert.cert, client_cert.key)
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request(method, target, body=body, headers={"User-Agent": USER_AGENT, **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        pairs = [(k.lower(), v) for k, v in resp.getheaders()]
        return HttpResponse(resp.status, dict(pairs), data, pairs)
    finally:
        conn.close()


def fetch_token(
    challenge: Mapping[str, str], creds: tuple[str, str] | None = None, *, scope: str | None = None
) -> str:
    """Answer a Bearer challenge: GET realm?service&scope (Basic auth if `creds`); return the token."""
    query: list[tuple[str, str]] = []
    if "service" in challenge:
        query.append(("service", challenge["service"]))
    wanted = scope if scope is not None else challenge.get("scope")
    if wanted:
        query.append(("scope", wanted))
    url = challenge["realm"] + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {"Authorization": basic_auth(*creds)} if creds else {}
    resp = raw_request("GET", url, headers=headers)
    if resp.status != 200:
        raise RuntimeError(f"token endpoint {url} answered {resp.status}: {resp.body[:200]!r}")
    payload = resp.json()
    assert isinstance(payload, dict)
    token = payload.get("token") or payload.get("access_token")
    assert isinstance(token, str)
    return token


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    creds: tuple[str, str] | None = None,
    scope: str | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """Send a request; on 401 answer the Basic or Bearer challenge once (like a registry client) and retry.

    `scope` overrides the scope asked of a token server (e.g. "repository:x:pull,push" for a PUT).
    """
    resp = raw_request(method, url, headers=headers, body=body, timeout=timeout)
    challenge_header = resp.headers.get("www-authenticate")
    if resp.status != 401 or challenge_header is None:
        return resp
    scheme, params = parse_challenge(challenge_header)
    if scheme == "basic":
        if creds is None:
            return resp
        authorization = basic_auth(*creds)
    elif scheme == "bearer":
        authorization = "Bearer " + fetch_token(params, creds, scope=scope)
    else:
        return resp
    retry_headers = {**(headers or {}), "Authorization": authorization}
    return raw_request(method, url, headers=retry_headers, body=body, timeout=timeout)


def wait_http(
    url: str,
    deadline_s: float = 10.0,
    ok_statuses: Collection[int] = DEFAULT_OK_STATUSES,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    cafile: Path | None = None,
    client_cert: KeyPair | None = None,
) -> HttpResponse:
    """Poll `url` with GET until it answers one of `ok_statuses`; fail at the deadline or if `proc` exits."""
    deadline = time.monotonic() + deadline_s
    last_error = "no attempt"
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before {url} was ready")
        try:
            resp = raw_request(
                "GET",
                url,
                timeout=max(0.1, min(2.0, deadline - time.monotonic())),
                cafile=cafile,
                client_cert=client_cert,
            )
        except OSError as exc:
            last_error = repr(exc)
        else:
            if resp.status in ok_statuses:
                return resp
            last_error = f"status {resp.status}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not ready after {deadline_s}s: {last_error}")
        time.sleep(0.01)  # polling interval between readiness probes, not a wait for a fixed delay


class BackgroundServer:
    """A stdlib `ThreadingHTTPServer` on 127.0.0.1 (free port) served from a daemon thread; `stop()` shuts
    it down and joins the thread. Usable as a context manager."""

    def __init__(
        self, handler: Callable[..., BaseHTTPRequestHandler], name: str, tls: TlsFiles | None = None
    ) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
