"""The access middleware: who is asking (credentials, client certificate), refused before any work.

It runs inside `observe`, so a refusal is logged and rendered as registry error JSON like any other, and
before every handler, so an unauthenticated client never reaches the cache or an upstream. It is also the
one place where the client's `Authorization` stops: the request handlers see has none, so nothing can
pass it on upstream (the upstream credentials are the mirror's own, from its settings). The one
exception is decided here too: with an upstream in client mode (`upstream_auth = "client"`, which
config refuses beside auth_htpasswd/auth_tokens), the header is the client's credentials for that
upstream, kept aside as `UPSTREAM_AUTHORIZATION` for `mirror.upstream.clientauth`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from mirror import errors, keys
from mirror.access.guard import Guard, Refused
from mirror.keys import GUARD
from mirror.middlewares import context
from mirror.tls import peer_subject

log = structlog.get_logger("mirror.access")

#: Probes must work without credentials; /metrics joins them unless `metrics_auth` is set.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Peer requests of the shared mode carry their own credential (an HMAC), checked by their handler.
PEER_PREFIX = "/_mirror/peer/"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="mirror"'}
#: The client's Authorization when it is meant for client-mode upstreams (never logged).
UPSTREAM_AUTHORIZATION = web.RequestKey("upstream_authorization", str)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record the client's identity; with client auth configured, refuse requests lacking good credentials."""
    ctx = context(request)
    ctx.client_cert = peer_subject(request.transport)
    if ctx.client_cert is not None:
        ctx.identity, ctx.auth = ctx.client_cert, "cert"
    guard = request.app.get(GUARD)
    if guard is not None and _protected(request):
        try:
            identity = await guard.identify(request.headers.get("Authorization"))
        except Refused as refused:
            request.app[keys.METRICS].auth_failures.labels(refused.reason).inc()
            log.warning(
                "auth_refused",
                reason=refused.reason,
                user=refused.user,
                remote=request.remote,
                path=request.path,
                request_id=ctx.request_id,
            )
            raise errors.Unauthorized(_detail(refused.reason), headers=CHALLENGE) from None
        ctx.identity, ctx.auth = identity.name, identity.method
    return await handler(without_client_credentials(request))


def without_client_credentials(request: web.Request) -> web.Request:
    """The request as handlers get it: the client's Authorization is the mirror's business and never
    travels on (upstreams get the mirror's own credentials)."""
    if "Authorization" not in request.headers:
        return request
    if request.app.get(keys.GATES) and request.app.get(GUARD) is None:
        request[UPSTREAM_AUTHORIZATION] = request.headers["Authorization"]  # copied into the clone
    headers = CIMultiDict(request.headers)
    del headers["Authorization"]
    return request.clone(headers=headers)


def upstream_authorization(request: web.Request) -> str | None:
    """The client's own credentials for a client-mode upstream, if it sent any."""
    return request.get(UPSTREAM_AUTHORIZATION)


def _protected(request: web.Request) -> bool:
    if request.path in OPEN_PATHS or request.path.startswith(PEER_PREFIX):
        return False
    return request.path != "/metrics" or request.app[keys.SETTINGS].metrics_auth


def _detail(reason: str) -> str:
    return {
        "missing": "credentials required: this mirror needs a user and password or a token",
        "malformed": "the Authorization header is not Basic or Bearer credentials",
    }.get(reason, "wrong user name, password or token")


async def guarding(app: web.Application) -> AsyncIterator[None]:
    """`cleanup_ctx`: load the credential files (when set) and watch them for the app's lifetime."""
    settings = app[keys.SETTINGS]
    if settings.auth_htpasswd is None and settings.auth_tokens is None:
        yield
        return
    guard = Guard(
        settings.auth_htpasswd,
        settings.auth_tokens,
        app[keys.METRICS],
        settings.reload_interval,
        settings.auth_cache_ttl,
    )
    since = await asyncio.to_thread(guard.load)
    app[GUARD] = guard
    watching = asyncio.create_task(guard.watch(since), name="auth files reload")
    try:
        yield
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await guard.close()
