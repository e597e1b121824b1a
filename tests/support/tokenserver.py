"""A Docker-style token server (JWT, ES256, x5c chain to a self-signed CA) for registry token auth."""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import json
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.net import BackgroundServer, basic_auth
from tests.support.tls import TlsFiles, certificate

DEFAULT_SERVICE = "mirror-test-registry"
DEFAULT_ISSUER = "mirror-test-token-issuer"


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server received."""

    method: str
    path: str  # path + query, as requested
    authorization: str | None

    @property
    def query(self) -> dict[str, list[str]]:
        """The parsed query string."""
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)

    @property
    def scopes(self) -> list[str]:
        """The `scope` parameters asked for."""
        return [s for value in self.query.get("scope", []) for s in value.split()]


@dataclass(frozen=True)
class TokenAuth:
    """docker-registry `auth.token` settings pointing at a TokenServer."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path
    server: TokenServer | None = None

    def config(self) -> dict[str, Any]:
        """The `auth` section of a docker-registry configuration."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.rootcertbundle),
            }
        }


def parse_scope(scope: str) -> dict[str, Any] | None:
    """Turn "repository:NAME:pull,push" into a JWT access entry (None if malformed)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class TokenServer(BackgroundServer):
    """Issues registry bearer tokens over HTTP (HTTPS with `tls`) on 127.0.0.1; grants exactly the scopes
    asked for.

    `expires_in`: advertised (and real) lifetime in seconds; None omits the field (tokens live 60 s).
    `credentials`: if set, token requests must carry that Basic auth, else 401.
    Mutable at any time: `fail_with` (an HTTP status every token request then fails with),
    `lifetime_s` (real JWT lifetime when it should differ from the advertised `expires_in`),
    `denied_repositories` (names granted no actions, like Docker Hub does for a private repository),
    `users` (more accounts, name -> password, accepted besides `credentials`) and `grants` (for each of
    those users the fnmatch patterns of the repositories it may pull; anything else is granted nothing,
    so a user whose grants are emptied is revoked).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        expires_in: int | None = 300,
        credentials: tuple[str, str] | None = None,
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        tls: TlsFiles | None = None,
    ) -> None:
        self.expires_in = expires_in
        self.credentials = credentials
        self.service = service
        self.issuer = issuer
        self.fail_with: int | None = None
        self.lifetime_s: int | None = None
        self.denied_repositories: set[str] = set()
        self.users: dict[str, str] = {}
        self.grants: dict[str, list[str]] = {}
        self.seen: list[TokenRequest] = []
        self._lock = threading.Lock()
        ca_key = ec.generate_private_key(ec.SECP256R1())
        self._key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = certificate("mirror-test-ca", ca_key, "mirror-test-ca", ca_key, ca=True)
        leaf = certificate("mirror-test-token-signer", self._key, "mirror-test-ca", ca_key)
        self._x5c = [base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode("ascii")]
        workdir.mkdir(parents=True, exist_ok=True)
        self.rootcertbundle = workdir / "token-ca.pem"
        self.rootcertbundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        super().__init__(_make_handler(self), "token-server", tls)

    @property
    def realm(self) -> str:
        """The token endpoint URL for the registry's challenge."""
        return f"{self.scheme}://127.0.0.1:{self.port}/token"

    def auth(self) -> TokenAuth:
        """Registry settings that trust this server."""
        return TokenAuth(self.realm, self.service, self.issuer, self.rootcertbundle, self)

    def issue(self, scopes: list[str], subject: str = "", *, lifetime_s: int | None = None) -> str:
        """Sign a token granting `scopes` (not recorded in `seen`)."""
        now = int(dt.datetime.now(dt.UTC).timestamp())
        ttl = next(t for t in (lifetime_s, self.lifetime_s, self.expires_in, 60) if t is not None)
        access = [entry for s in scopes if (entry := parse_scope(s)) is not None]
        for entry in access:
            if entry["name"] in self.denied_repositories:
                entry["actions"] = []
            if subject in self.users:
                granted = any(fnmatch.fnmatchcase(entry["name"], p) for p in self.grants.get(subject, []))
                entry["actions"] = [a for a in entry["actions"] if a == "pull"] if granted else []
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + ttl,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})

    def token_response(self, scopes: list[str], subject: str) -> dict[str, Any]:
        """The JSON body answering a token request."""
        token = self.issue(scopes, subject)
        body: dict[str, Any] = {"token": token, "access_token": token}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        body["issued_at"] = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        return body

    def subject_of(self, authorization: str | None) -> str | None:
        """Who sent the token request: "" for anyone when no account is set up, None if refused."""
        if self.credentials is None and not self.users:
            return ""
        accounts = {**self.users, **(dict([self.credentials]) if self.credentials else {})}
        for name, password in accounts.items():
            if authorization == basic_auth(name, password):
                return name
        return None

    def requests_since(self, mark: int) -> list[TokenRequest]:
        """Requests received after `len(seen)` was `mark`."""
        with self._lock:
            return list(self.seen[mark:])

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self.seen.append(req)


def _make_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def _send(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            auth_header = self.headers.get("Authorization")
            server._record(TokenRequest("GET", self.path, auth_header))
            parts = urllib.parse.urlsplit(self.path)
            if server.fail_with is not None:
                self._send(server.fail_with, {"errors": [{"code": "UNAVAILABLE", "message": "failing"}]})
                return
            if parts.path != "/token":
                self._send(404, {"errors": [{"code": "NOT_FOUND", "message": parts.path}]})
                return
            subject = server.subject_of(auth_header)
            if subject is None:
                challenge = {"WWW-Authenticate": 'Basic realm="mirror-test-token"'}
                self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad creds"}]}, challenge)
                return
            query = urllib.parse.parse_qs(parts.query)
            if query.get("service", [server.service]) != [server.service]:
                self._send(400, {"errors": [{"code": "INVALID", "message": "unknown service"}]})
                return
            scopes = [s for value in query.get("scope", []) for s in value.split()]
            self._send(200, server.token_response(scopes, subject))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            server._record(TokenRequest("POST", self.path, self.headers.get("Authorization")))
            self._send(405, {"errors": [{"code": "UNSUPPORTED", "message": "use GET"}]})

    return Handler
