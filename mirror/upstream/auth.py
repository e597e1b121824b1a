"""Upstream authentication: `WWW-Authenticate` challenges, bearer tokens per scope, Basic credentials.

Tokens are cached per (realm, service, scope) until shortly before they expire, and one fetch is shared
by concurrent requests. Credentials go only to the upstream's own origin or to a realm trusted for it
(`realm_trusted`).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mirror import errors, oci
from mirror.singleflight import SingleFlight
from mirror.upstream import fields

#: Token lifetime when the token server does not say (the distribution token spec's default).
DEFAULT_EXPIRES_IN = 60
#: Docker Hub's API and token hosts differ; this pair is trusted without configuration.
BUILTIN_TRUSTED_REALMS = {oci.DOCKER_HUB_HOST: frozenset({"auth.docker.io"})}

_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed `WWW-Authenticate` challenge: scheme (lowercase) and its parameters."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenge(header: str) -> Challenge | None:
    """The challenge in a `WWW-Authenticate` header, or None when it has no scheme we know."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params = {m[1].lower(): _unquote(m[2]) if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}
    return Challenge(scheme, params)


def _unquote(text: str) -> str:
    """A quoted-string's value: each backslash escapes the character after it (RFC 9110 §5.6.4)."""
    return re.sub(r"\\(.)", r"\1", text)


def basic_header(username: str, password: str) -> str:
    """An `Authorization: Basic` value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def realm_trusted(upstream_url: str, realm: str, extra: frozenset[str]) -> bool:
    """Whether credentials for `upstream_url` may be sent to the token realm `realm`.

    Trusted: the upstream's own origin (scheme, host and port: another port on the same host is another
    server), Docker Hub's known token host, and realms listed in `extra` (`host`, meaning its default
    port, or `host:port`). A realm over plain http is never trusted with credentials for an https
    upstream. This is the one place the rule lives.
    """
    up, rl = _origin(upstream_url), _origin(realm)
    if up is None or rl is None or (up[0] == "https" and rl[0] != "https"):
        return False
    if rl == up:
        return True
    scheme, host, port = rl
    default = port == (443 if scheme == "https" else 80)
    listed = extra | BUILTIN_TRUSTED_REALMS.get(up[1], frozenset())
    return f"{host}:{port}" in listed or (default and host in listed)


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, lowercase host, port with the scheme's default) of an absolute http(s) URL, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port out of range or not a number
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def mirror_refused() -> errors.Unauthorized:
    """401 for a client when the upstream refused the mirror's own credentials (or their absence)."""
    return errors.Unauthorized(
        "the upstream registry refused the mirror's credentials",
        headers={"WWW-Authenticate": 'Basic realm="mirror"'},
    )


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    valid_until: float  # time.monotonic()


def token_validity(expires_in: object, now: float) -> float:
    """When to stop using a token: before `expires_in` runs out, with a margin for clock skew and flight."""
    seconds = fields.lifetime(expires_in, DEFAULT_EXPIRES_IN)
    return now + max(seconds - 20, seconds * 0.5)


TokenFetcher = Callable[[Challenge, str, str | None], Awaitable[tuple[str, object]]]


class UpstreamAuth:
    """What `Authorization` to send to one upstream, learned from its challenges.

    `fetch_token(challenge, scope, basic)` performs the HTTP token request and returns (token, expires_in).
    """

    def __init__(
        self,
        upstream_url: str,
        fetch_token: TokenFetcher,
        username: str | None = None,
        password: str | None = None,
        trusted_realms: frozenset[str] = frozenset(),
    ) -> None:
        self._upstream_url = upstream_url
        self._fetch_token = fetch_token
        self._basic = basic_header(username, password) if username and password else None
        self._trusted = trusted_realms
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, str], Token] = {}
        self._flights: SingleFlight[Token] = SingleFlight()

    async def authorization(self, scope: str) -> str | None:
        """The `Authorization` value to send pre-emptively for `scope`, once the upstream has challenged.

        After one bearer challenge, tokens for other scopes are fetched before the request, saving the
        401 round trip per repository.
        """
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic
        return await self._bearer(challenge, scope)

    async def answer(self, header: str, scope: str, sent: str | None) -> str | None:
        """The `Authorization` to retry with after a 401 carrying `header`, or None if there is none.

        `sent` is what the failed request carried: a rejected token is dropped and fetched anew.
        """
        challenge = parse_challenge(header)
        if challenge is None:
            return None
        self._challenge = challenge
        if challenge.scheme == "basic":
            return self._basic if self._basic != sent else None
        scope = challenge.params.get("scope", scope)
        key = self._token_key(challenge, scope)
        stale = self._tokens.get(key)
        if stale is not None and f"Bearer {stale.value}" == sent:
            del self._tokens[key]
        return await self._bearer(challenge, scope)

    async def _bearer(self, challenge: Challenge, scope: str) -> str:
        key = self._token_key(challenge, scope)
        token = self._tokens.get(key)
        if token is None or token.valid_until <= time.monotonic():
            token, _ = await self._flights.run(key, lambda: self._new_token(challenge, scope))
            self._tokens[key] = token
        return f"Bearer {token.value}"

    async def _new_token(self, challenge: Challenge, scope: str) -> Token:
        trusted = realm_trusted(self._upstream_url, challenge.realm, self._trusted)
        value, expires_in = await self._fetch_token(challenge, scope, self._basic if trusted else None)
        return Token(value, token_validity(expires_in, time.monotonic()))

    def refused(self, challenge: str) -> errors.RegistryError:
        """The error for a client when the upstream refused what this sent (its `challenge` is not for
        the client: the client's own credentials are never what the mirror sends here)."""
        return mirror_refused()

    @staticmethod
    def _token_key(challenge: Challenge, scope: str) -> tuple[str, str, str]:
        return challenge.realm, challenge.params.get("service", ""), scope

    async def close(self) -> None:
        await self._flights.close()
