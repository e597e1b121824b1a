"""The listening side of `mirror serve`: descriptors, connections and their deadlines, and a shutdown
that keeps one deadline.

- The soft open-file limit is raised to the hard one at start-up, and client connections are bounded
  below it (`max_connections`, lowered to leave FD_RESERVE descriptors for upstream connections, blob
  files and the indexes): a connection past the bound gets a 503 at once instead of an accept that fails.
- A connection must complete each request's headers within `header_timeout` of their first byte
  (slowloris), and an idle keep-alive connection, or one that never sends a byte, is closed after
  `idle_timeout`.
- Running out of descriptors anyway (an accept failing with EMFILE) is one log line per
  EXHAUSTED_LOG_INTERVAL and a counter, not a traceback per accept; every other event-loop error is a
  structured log event.
- A request aiohttp refuses before any handler runs (a malformed request line or header) gets a registry
  error document, not plain text.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import signal
import ssl
import time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from mirror import errors, keys
from mirror.config import Settings
from mirror.metrics import Metrics

log = structlog.get_logger("mirror.server")

#: Descriptors kept free of client connections: upstream connections, fill and blob files, the SQLite
#: indexes, the event loop's own. 256 covers the 64 transfers with both their files and 64 manifest
#: connections, twice over.
FD_RESERVE = 256
#: The smallest connection limit the descriptor reserve may leave.
MIN_CONNECTIONS = 16
#: Seconds between two log lines about exhausted descriptors (the counter counts every failed accept).
EXHAUSTED_LOG_INTERVAL = 10.0
#: Seconds a refused connection is kept to let its request arrive, so the 503 is read, not reset.
REFUSAL_LINGER = 1.0
#: Seconds after the shutdown grace at which requests still running are cancelled.
CUT_AFTER = 0.1
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a hard limit the kernel caps lower (nr_open): keep the soft one
            pass
    return soft, hard


def connection_limit(configured: int, open_files: int) -> int:
    """The connection bound in force: `configured`, lowered to leave FD_RESERVE descriptors free."""
    return max(MIN_CONNECTIONS, min(configured, open_files - FD_RESERVE))


class Gate:
    """Counts client connections against the limit and the metrics."""

    def __init__(self, limit: int, header_timeout: float, metrics: Metrics) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.open = 0
        self._metrics = metrics

    def opened(self) -> None:
        self.open += 1
        self._metrics.connections.set(self.open)

    def closed(self) -> None:
        self.open -= 1
        self._metrics.connections.set(self.open)

    def refused(self) -> None:
        self._metrics.connections_refused.inc()


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler with a request-header deadline and registry error documents."""

    def __init__(self, gate: Gate, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._gate.opened()
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gate.closed()
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:  # a request's headers are complete
            self._stop_header_timer()
        elif data and self._header_timer is None:
            self._header_timer = asyncio.get_running_loop().call_later(
                self._gate.header_timeout, self._headers_too_slow
            )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        log.info("request_header_timeout", seconds=self._gate.header_timeout)
        self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse or serve: a registry error document, one log line."""
        if status >= 500:
            log.error("request_failed", status=status, exc_info=exc)
        else:
            log.info("request_malformed", status=status, detail=str(message or exc)[:300])
        if request.writer.output_size > 0:
            raise ConnectionError("response already under way")
        error: errors.RegistryError = (
            errors.MalformedRequest(str(message or exc)[:300]) if status < 500 else errors.RegistryError()
        )
        resp = web.Response(status=status, body=error.body(), content_type="application/json")
        resp.force_close()
        return resp


class Refusal(asyncio.Protocol):
    """A connection past the limit: a 503 registry error, then closed."""

    BODY = errors.ConnectionLimit().body()
    ANSWER = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.ANSWER)
        asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: the answer is the same for all


class GuardedServer(web.Server):
    """aiohttp's server, making GuardedHandlers, or Refusals once the gate is full."""

    def __init__(self, gate: Gate, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  # aiohttp's signature
        """Wait up to `timeout` for requests under way, then cancel them at once: aiohttp alone then
        waits `timeout` a second time for handlers it only asked to stop. The cut comes CUT_AFTER the
        first wait, which ends exactly at `timeout` (no rounding: `timeout_ceil_threshold`)."""
        loop = asyncio.get_running_loop()
        cut = None if timeout is None else loop.call_later(timeout + CUT_AFTER, self._cut)
        try:
            await super().shutdown(timeout)
        finally:
            if cut is not None:
                cut.cancel()

    def _cut(self) -> None:
        for handler in self.connections:
            task = handler._task_handler
            if task is not None and not task.done():
                task.cancel()

    def __call__(self) -> Any:
        if self._gate.open >= self._gate.limit:
            self._gate.refused()
            return Refusal()
        return GuardedHandler(self._gate, self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    def __init__(self, app: web.Application, gate: Gate, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._gate = gate

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(
            self._gate,
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,  # the handler settings AppRunner gathered (timeouts, access log)
        )


class LoopErrors:
    """The event loop's exception handler: structured events; exhausted descriptors rate-limited."""

    def __init__(self, metrics: Metrics, interval: float = EXHAUSTED_LOG_INTERVAL) -> None:
        self._metrics = metrics
        self._interval = interval
        self._last_logged = float("-inf")
        self._unlogged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES:
            self._metrics.open_files_exhausted.inc()
            now = time.monotonic()
            if now - self._last_logged < self._interval:
                self._unlogged += 1
                return
            log.error(
                "open_files_exhausted",
                error=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                detail=str(context.get("message", "")),
                since_last_line=self._unlogged,
            )
            self._last_logged, self._unlogged = now, 0
            return
        log.error("event_loop_error", detail=str(context.get("message", "")), exc_info=exc)


def serve(app: web.Application, tls: ssl.SSLContext | None, listen: dict[str, Any]) -> None:
    """Run the mirror until SIGINT/SIGTERM, on `listen` (`host` and `port`, or a bound `sock`)."""
    asyncio.run(_serve(app, tls, listen))


async def _serve(app: web.Application, tls: ssl.SSLContext | None, listen: dict[str, Any]) -> None:
    settings: Settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    soft, hard = raise_open_files_limit()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(LoopErrors(metrics))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gate = Gate(connection_limit(settings.max_connections, soft), settings.header_timeout, metrics)
    runner = GuardedRunner(
        app,
        gate,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=settings.idle_timeout,
        timeout_ceil_threshold=float("inf"),  # deadlines as given, not rounded up to whole seconds
        shutdown_timeout=settings.shutdown_grace,
    )
    await runner.setup()
    try:
        site: web.BaseSite
        if "sock" in listen:
            site = web.SockSite(runner, listen["sock"], ssl_context=tls)
        else:
            site = web.TCPSite(runner, listen["host"], listen["port"], ssl_context=tls, reuse_address=True)
        await site.start()
        log.info(
            "mirror_listening",
            listen=str(settings.listen),
            open_files=soft,
            open_files_hard=hard,
            max_connections=gate.limit,
        )
        await stop.wait()
        log.info("mirror_stopping", grace=settings.shutdown_grace)
    finally:
        await runner.cleanup()
