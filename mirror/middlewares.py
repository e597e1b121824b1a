"""Middlewares: a request context, one log line and one metrics sample per request, registry errors → JSON.

No exception escapes as a 500 with a traceback: registry errors render as registry JSON; anything
unexpected is logged with its traceback and answered with a registry `UNKNOWN` error.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mirror import errors, keys

log = structlog.get_logger("mirror.request")
#: Probe and scrape endpoints: logged at debug unless `log_probes` (kubelet and Prometheus ask every few
#: seconds, which would drown the pulls in the log).
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


@dataclass(slots=True)
class RequestContext:
    """What a handler learned about its request, for the log line and the metrics."""

    request_id: str
    kind: str = "other"
    result: str = "none"
    source: str | None = None  # where body bytes came from: cache | upstream
    bytes_sent: int = 0
    started: float = 0.0  # time.monotonic() when the request arrived
    upstream: str = "none"  # the registry host serving the request, once routed
    namespace: str | None = None  # containerd's ?ns=, echoed as OCI-Namespace
    image: str | None = None  # registry/name:tag or registry/name@digest asked for, once routed
    identity: str | None = None  # Basic user, token name or client certificate subject
    auth: str = "none"  # how the identity was proved: basic | token | cert | none
    client_cert: str | None = None  # the verified client certificate's subject (mTLS)
    prepared: web.StreamResponse | None = None  # the response whose headers went out, once one did


CONTEXT = web.RequestKey("context", RequestContext)


def context(request: web.Request) -> RequestContext:
    """The request's context (a fresh one for requests that bypassed the middleware)."""
    if CONTEXT not in request:
        request[CONTEXT] = RequestContext(request_id="-")
    return request[CONTEXT]


def error_response(exc: errors.RegistryError) -> web.Response:
    return web.Response(
        status=exc.status,
        body=exc.body(),
        content_type="application/json",
        headers=exc.headers,
    )


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, time the request, write its log line and metrics; render errors."""
    request_id = request.headers.get("X-Request-Id", "")[:128] or uuid.uuid4().hex
    started = time.monotonic()
    ctx = RequestContext(request_id, started=started)
    request[CONTEXT] = ctx
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except errors.RegistryError as exc:
        response = error_response(exc)
        status, ctx.result = exc.status, "error"
        if exc.status >= 500:
            log.warning("upstream_error", code=exc.code, detail=str(exc.detail), request_id=request_id)
    except asyncio.CancelledError:
        status = 499  # the server cancelled the handler because the client went away
        raise
    except ConnectionError:
        # The client went away mid-response (499 is nginx's convention for the log). Returning a response
        # lets aiohttp finish quietly: writing it to the closed connection fails without a traceback.
        status = 499
        response = web.Response(status=499)
    except web.HTTPException as exc:
        response = error_response(_from_http(exc))
        status, ctx.result = response.status, "error"
    except OSError as exc:  # a file the handler was sending failed under it (storage logs its own)
        log.exception("io_error", request_id=request_id, path=request.path)
        failure = errors.StorageUnavailable(f"cache storage failed: {type(exc).__name__}")
        response = error_response(failure)
        status, ctx.result = failure.status, "error"
    except Exception:
        log.exception("unhandled_error", request_id=request_id, path=request.path)
        response = error_response(errors.RegistryError("internal error"))
        status, ctx.result = 500, "error"
    finally:
        seconds = time.monotonic() - started
        _record(request, ctx, status, seconds)
    # The handler's own answer had its headers out when it failed: an error response now would reach
    # the client as body bytes of that answer. Cut the connection: it sees a short body.
    if ctx.prepared is not None and response is not ctx.prepared and request.transport is not None:
        request.transport.abort()
    return response


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every response, streamed ones included, says the API version and request id."""
    ctx = context(request)
    ctx.prepared = response
    if ctx.kind != "other" and ctx.started:
        request.app[keys.METRICS].time_to_first_byte.labels(ctx.kind, ctx.result).observe(
            time.monotonic() - ctx.started
        )
    response.headers.update(API_VERSION)
    response.headers["X-Request-Id"] = ctx.request_id
    if ctx.namespace is not None:
        response.headers["OCI-Namespace"] = ctx.namespace


def _from_http(exc: web.HTTPException) -> errors.RegistryError:
    if exc.status == 405:
        return errors.Unsupported("this mirror only serves pulls")
    if exc.status == 404:
        return errors.NotFound("no such endpoint")
    return errors.RegistryError(exc.reason)


def _record(request: web.Request, ctx: RequestContext, status: int, seconds: float) -> None:
    metrics = request.app[keys.METRICS]
    if ctx.kind != "other":
        upstream = ctx.upstream
        metrics.requests.labels(upstream, ctx.kind, request.method, str(status), ctx.result).inc()
        metrics.request_duration.labels(ctx.kind, ctx.result).observe(seconds)
        if ctx.source and ctx.bytes_sent:
            metrics.bytes_served.labels(upstream, ctx.source).inc(ctx.bytes_sent)
    quiet = request.path in PROBE_PATHS and not request.app[keys.SETTINGS].log_probes
    (log.debug if quiet else log.info)(
        "request",
        request_id=ctx.request_id,
        method=request.method,
        path=request.path,
        status=status,
        kind=ctx.kind,
        upstream=ctx.upstream,
        ns=ctx.namespace,
        result=ctx.result,
        bytes=ctx.bytes_sent,
        seconds=round(seconds, 4),
        remote=request.remote,
        user_agent=request.headers.get("User-Agent", "")[:200],
        identity=ctx.identity,
        auth=ctx.auth,
        client_cert=ctx.client_cert,
        image=ctx.image,
    )
