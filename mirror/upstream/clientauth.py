"""Per-client upstream authorization (`upstream_auth = "client"`): cache once, authorize every pull.

The one exception to "a client's `Authorization` is never sent upstream" lives here. For an upstream in
client mode, every request for its content is first authorized by the upstream itself: a HEAD of the
manifest or blob asked for, sent with the client's own credentials (a bearer token for the upstream's
realm as is; Basic credentials as is to a Basic upstream, or exchanged for a token at a trusted realm).
The answer is remembered per (keyed hash of the credentials, repository) for `ttl` seconds when it
allows, `denied_ttl` when the upstream said 401 or 403. The upstream requests a client's request causes
(manifest GETs, the blob download it starts, and that download's resumes) carry that client's
credentials too: `ClientGate.admit` puts them in a context variable, which tasks started from the
request inherit. A client without credentials is sent the upstream's own challenge, so that it runs
the token flow against the upstream's realm and comes back with a bearer token.

Credentials and their hashes stay in memory: never in logs, metrics labels or errors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from mirror import errors
from mirror.metrics import Metrics
from mirror.singleflight import SingleFlight
from mirror.upstream.auth import UpstreamAuth

#: Decisions remembered at most, least recently used dropped first (each is a few hundred bytes).
MAX_DECISIONS = 16384
#: Clients (distinct credentials) whose token state is kept at most.
MAX_CLIENTS = 1024
#: Upstream answers that decide "no" for the repository and are remembered (for `denied_ttl`).
_DENIALS = (errors.Unauthorized, errors.Denied)


class Authorizer(Protocol):
    """What `Authorization` to send upstream: the mirror's own (`UpstreamAuth`) or a client's."""

    async def authorization(self, scope: str) -> str | None: ...

    async def answer(self, header: str, scope: str, sent: str | None) -> str | None: ...

    def refused(self, challenge: str) -> errors.RegistryError: ...


_CURRENT: ContextVar[tuple[str, ClientAuth] | None] = ContextVar("mirror_client_auth", default=None)


def current(upstream: str) -> ClientAuth | None:
    """The client credentials the request (or the task it started) runs with, for `upstream` only."""
    found = _CURRENT.get()
    return found[1] if found is not None and found[0] == upstream else None


def unauthorized(challenge: str) -> errors.Unauthorized:
    """401 for a client, carrying the upstream's own challenge so the client can answer it."""
    headers = {"WWW-Authenticate": challenge} if challenge else None
    return errors.Unauthorized("the upstream registry wants credentials for this repository", headers=headers)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A client's `Authorization`, parsed: `scheme` is basic, bearer or none."""

    scheme: str
    header: str | None = field(default=None, repr=False)
    username: str = ""
    password: str = field(default="", repr=False)


def parse_credentials(header: str | None) -> Credentials:
    """The client's credentials; a malformed or unknown `Authorization` is UNAUTHORIZED."""
    if not header:
        return Credentials("none")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return Credentials("bearer", f"Bearer {value}")
    if scheme.lower() == "basic" and value:
        try:
            username, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            username, sep, password = "", "", ""
        if sep and username:
            return Credentials("basic", f"Basic {value}", username, password)
    raise errors.Unauthorized("the Authorization header is neither Basic credentials nor a bearer token")


class ClientAuth:
    """One client's credentials as an `Authorizer` for one upstream."""

    def __init__(self, credentials: Credentials, basic: UpstreamAuth | None = None) -> None:
        self._credentials = credentials
        self._basic = basic  # Basic credentials: the upstream's challenges answered with them
        self._challenge = ""  # the upstream's last challenge, relayed when it refuses the client

    async def authorization(self, scope: str) -> str | None:
        if self._basic is not None:
            return await self._guarded(self._basic.authorization(scope))
        return self._credentials.header

    async def answer(self, header: str, scope: str, sent: str | None) -> str | None:
        self._challenge = header
        if self._basic is None:  # a bearer token or nothing: the client answers challenges itself
            return None
        return await self._guarded(self._basic.answer(header, scope, sent))

    async def _guarded(self, pending: Awaitable[str | None]) -> str | None:
        try:
            return await pending
        except errors.Unauthorized:  # the token realm refused the client's Basic credentials
            raise self.refused(self._challenge) from None

    def refused(self, challenge: str) -> errors.RegistryError:
        return unauthorized(challenge or self._challenge)

    async def close(self) -> None:
        if self._basic is not None:
            await self._basic.close()


@dataclass(frozen=True, slots=True)
class _Decision:
    until: float  # time.monotonic()
    error: errors.RegistryError | None  # None: allowed


class ClientGate:
    """Authorizes each client request for one upstream in client mode, remembering the answers."""

    def __init__(
        self,
        upstream: str,
        auth_for: Callable[[str, str], UpstreamAuth],
        metrics: Metrics,
        ttl: float,
        denied_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self._auth_for = auth_for  # an UpstreamAuth for a Basic client's username and password
        self._metrics = metrics
        self._ttl = ttl
        self._denied_ttl = denied_ttl
        self._clock = clock
        self._secret = os.urandom(32)  # keys the credential hashes: unguessable outside this process
        self._decisions: OrderedDict[tuple[bytes, str], _Decision] = OrderedDict()
        self._clients: OrderedDict[bytes, tuple[float, ClientAuth]] = OrderedDict()
        self._flights: SingleFlight[None] = SingleFlight()

    async def admit(self, header: str | None, name: str, probe: Callable[[], Awaitable[object]]) -> None:
        """Let the request go on only if the upstream lets this client pull `name`; from here on, the
        request's upstream requests carry the client's credentials. `probe` is the HEAD that asks."""
        key = self.use(header)
        decision = self._decisions.get((key, name))
        if decision is not None and decision.until > self._clock():
            self._decisions.move_to_end((key, name))
            self._count(decision.error, "cache")
            if decision.error is not None:
                raise decision.error.with_traceback(None)
            return
        await self._flights.run((key, name), lambda: self._ask(key, name, probe))

    def use(self, header: str | None) -> bytes:
        """Send this request's upstream requests with the client's credentials (their upstream answer
        decides; no HEAD first); the keyed hash of the credentials."""
        credentials = parse_credentials(header)
        key = hmac.digest(self._secret, (credentials.header or "").encode(), hashlib.sha256)
        _CURRENT.set((self.upstream, self._client(key, credentials)))
        return key

    async def _ask(self, key: bytes, name: str, probe: Callable[[], Awaitable[object]]) -> None:
        try:
            await probe()
        except _DENIALS as exc:
            self._remember(key, name, _Decision(self._clock() + self._denied_ttl, exc))
            self._count(exc, "upstream")
            raise
        except errors.RegistryError as exc:  # not found, unavailable, ...: not a decision on the client
            self._count(exc, "upstream")
            raise
        self._remember(key, name, _Decision(self._clock() + self._ttl, None))
        self._count(None, "upstream")

    def _remember(self, key: bytes, name: str, decision: _Decision) -> None:
        self._decisions[(key, name)] = decision
        self._decisions.move_to_end((key, name))
        while len(self._decisions) > MAX_DECISIONS:
            self._decisions.popitem(last=False)

    def _client(self, key: bytes, credentials: Credentials) -> ClientAuth:
        """The client's `ClientAuth`; Basic clients' tokens are kept no longer than `ttl`, so that a
        revoked user's token is not reused past the next decision."""
        now = self._clock()
        found = self._clients.get(key)
        if found is not None and found[0] + self._ttl > now:
            self._clients.move_to_end(key)
            return found[1]
        basic = None
        if credentials.scheme == "basic":
            basic = self._auth_for(credentials.username, credentials.password)
        client = ClientAuth(credentials, basic)
        self._clients[key] = (now, client)
        self._clients.move_to_end(key)
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        return client

    def _count(self, error: errors.RegistryError | None, source: str) -> None:
        decision = "allowed" if error is None else error.code.lower()
        self._metrics.client_authorizations.labels(self.upstream, decision, source).inc()

    async def close(self) -> None:
        await self._flights.close()
        for _, client in self._clients.values():
            await client.close()
