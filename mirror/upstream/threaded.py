"""The threaded transport: blob bodies over blocking sockets in transfer threads.

One transfer thread receives a body (`receive.py`: one receive at a time into a reused buffer), writes
it and hashes it, releasing the GIL for each step, instead of moving every chunk through the event loop
(why, with figures: the README's "Design"). Connections are pooled per origin and proxy; `close` shuts
busy ones down so that no thread outlives the mirror. Only blob GETs take this path. Through a forward
proxy (chosen per request by the upstream's `ProxyRules`), https targets are reached with `CONNECT`
(`set_tunnel`) and plain http ones with absolute URIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mirror.errors import describe
from mirror.upstream.early import read_early
from mirror.upstream.egress import DIRECT, Proxy, ProxyRules
from mirror.upstream.fields import content_length
from mirror.upstream.receive import BUFFER, Coalesced, FileSink
from mirror.upstream.transport import BodyBroken, HashUpdate, OnBytes, TransportError

#: Threads for blocking transfers by default (`max_transfers`): each download holds one for its whole
#: length. Past them, a download's headers and body go over the session instead (`TransportBusy`).
MAX_TRANSFERS = 64
#: Transfer threads started with the transport instead of by the first cold requests: a thread is
#: started on the event loop, which waits until it runs (milliseconds on a busy machine), and a cold
#: pull asks for its config and layers at once (8: more than the layers one client fetches at once).
PRESTART = 8
#: Seconds the threads started by `prestart` wait for each other before giving up (a stalled machine).
PRESTART_WAIT = 5.0
_A = TypeVar("_A")
_R = TypeVar("_R", int, bytes)


class Stopped(Exception):
    """The transfer was stopped from the event loop (its pump was cancelled)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a pooled connection leads: the target origin, and the proxy it goes through (None: direct)."""

    scheme: str
    host: str
    port: int
    proxy: Proxy | None = None


class TransportBusy(Exception):
    """Every transfer thread is taken: the caller sends the request another way, without waiting."""


class ThreadedTransport:
    """Idle keep-alive connections by origin, and the transfer threads blocking exchanges run on.

    Each exchange holds one of `max_transfers` slots from its request until its response is released,
    so a request never queues behind running bodies: with no slot free, `send` raises TransportBusy."""

    def __init__(
        self,
        connect_timeout: float | None,
        read_timeout: float | None,
        egress: ProxyRules = DIRECT,
        max_transfers: int = MAX_TRANSFERS,
        early_bytes: int = 0,
    ) -> None:
        self._egress = egress
        self.max_transfers = max_transfers
        #: A 2xx body announced at most this long is read along with its headers (`early.py`; 0: never).
        self.early_bytes = early_bytes
        self.active = 0  # slots held: exchanges sent and not released
        self.executor = ThreadPoolExecutor(max_transfers, thread_name_prefix="mirror-transfer")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._busy: set[http.client.HTTPConnection] = set()  # shut down on close(), unblocking threads
        self._lock = threading.Lock()
        self._tls = ssl.create_default_context()

    def prestart(self, count: int = PRESTART) -> None:
        """Start `count` transfer threads now (blocking: run it in a thread): each job waits until all
        of them run, so each takes a thread of its own."""
        count = min(count, self.max_transfers)
        barrier = threading.Barrier(count)
        jobs = [self.executor.submit(barrier.wait, PRESTART_WAIT) for _ in range(count)]
        for job in jobs:
            with contextlib.suppress(threading.BrokenBarrierError):
                job.result()

    @staticmethod
    def warm() -> None:
        """Load the resolver (glibc reads its NSS configuration on the first `getaddrinfo` of a process)
        before the first blob, not during it. Blocking, but no network: a numeric address."""
        socket.getaddrinfo("127.0.0.1", None)

    def _take(self, key: Origin) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            conn = idle.pop() if idle else None
            if conn is not None:
                self._busy.add(conn)
            return conn

    def give_back(self, key: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._busy.discard(conn)
            self._idle.setdefault(key, []).append(conn)

    def discard(self, conn: http.client.HTTPConnection) -> None:
        """Close a connection that will not be used again."""
        with self._lock:
            self._busy.discard(conn)
        conn.close()

    def _new(self, key: Origin, used: list[http.client.HTTPConnection]) -> http.client.HTTPConnection:
        host, port, proxy = key.host, key.port, key.proxy
        if proxy is not None:
            host, port = proxy.host, proxy.port
        conn: http.client.HTTPConnection
        if key.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self._connect_timeout, context=self._tls)
            if proxy is not None:
                auth = proxy.authorization
                conn.set_tunnel(key.host, key.port, {"Proxy-Authorization": auth} if auth else None)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._connect_timeout)
        with self._lock:
            self._busy.add(conn)
        used.append(conn)
        try:
            conn.connect()
        except BaseException:
            self.discard(conn)
            raise
        assert conn.sock is not None
        conn.sock.settimeout(self._read_timeout)
        return conn

    async def send(self, method: str, url: URL, headers: Mapping[str, str]) -> ThreadedResponse:
        """Send the request and read the response headers, in a transfer thread."""
        if self.active >= self.max_transfers:
            raise TransportBusy(f"all {self.max_transfers} transfer threads are busy")
        loop = asyncio.get_running_loop()
        used: list[http.client.HTTPConnection] = []
        self.active += 1
        job = loop.run_in_executor(self.executor, self.request, method, url, headers, used)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:  # a deadline: unblock the thread, drop what it may still get
            for conn in used:
                _shut_down(conn)
            job.add_done_callback(self._release_late)
            raise
        except (OSError, http.client.HTTPException) as exc:
            self.active -= 1
            raise TransportError(describe(exc), timeout=isinstance(exc, TimeoutError)) from None
        except BaseException:
            self.active -= 1
            raise

    def _release_late(self, job: asyncio.Future[ThreadedResponse]) -> None:
        """An exchange given up while its thread still ran: its response released, its slot freed."""
        if not job.cancelled() and job.exception() is None:
            job.result().release()
        else:
            self.active -= 1

    def request(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        used: list[http.client.HTTPConnection] | None = None,
    ) -> ThreadedResponse:
        """Send the request and read the response headers (blocking: call it in `executor`); each
        connection tried is appended to `used`, so that the event loop can shut it down."""
        used = [] if used is None else used
        port = url.port or (443 if url.scheme == "https" else 80)
        key = Origin(url.scheme, url.raw_host or "", port, self._egress.proxy_for(url))
        conn = self._take(key)
        if conn is not None:
            used.append(conn)
            try:
                return self._exchange(key, conn, method, url, headers)
            except (ConnectionError, http.client.BadStatusLine, http.client.ImproperConnectionState):
                pass  # an idle keep-alive the server had closed (discarded): once more on a new one
        conn = self._new(key, used)
        return self._exchange(key, conn, method, url, headers)

    def _exchange(
        self,
        key: Origin,
        conn: http.client.HTTPConnection,
        method: str,
        url: URL,
        headers: Mapping[str, str],
    ) -> ThreadedResponse:
        target, send = url.raw_path_qs, dict(headers)
        if key.proxy is not None and key.scheme == "http":  # no tunnel: the proxy is asked for the URL
            target = str(url.with_fragment(None))
            if key.proxy.authorization is not None:
                send["Proxy-Authorization"] = key.proxy.authorization
        try:
            conn.request(method, target, headers=send)
            sock = conn.sock  # a `Connection: close` answer takes it from `conn`
            resp = conn.getresponse()
        except BaseException:
            self.discard(conn)
            raise
        early = b""
        length = resp.length
        if sock is not None and length and length <= self.early_bytes and 200 <= resp.status < 300:
            early = read_early(resp.fp, sock, length)
        return ThreadedResponse(self, key, conn, resp, sock, early)

    async def close(self) -> None:
        self.shut_down()

    def shut_down(self) -> None:
        """Close idle connections, and shut down busy ones so that threads blocked on them return."""
        with self._lock:
            idle, self._idle = self._idle, {}
            busy = list(self._busy)
        for conns in idle.values():
            for conn in conns:
                conn.close()
        for conn in busy:
            _shut_down(conn)
        self.executor.shutdown(wait=False, cancel_futures=True)


class ThreadedResponse:
    """An upstream response whose headers are read; its body is received by `pump_into`."""

    def __init__(
        self,
        pool: ThreadedTransport,
        key: Origin,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        sock: socket.socket | None = None,
        early: bytes = b"",
    ) -> None:
        self._pool = pool
        self._slot = True  # one of the pool's `max_transfers`, held until `release`
        self._early = early  # the body's first bytes, read with the headers (`early.py`)
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self._resp = resp
        self._sock = sock
        self.status = resp.status
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(resp.getheaders()))
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        self.content_length = None if chunked else content_length(self.headers.get("Content-Length"))
        self._stop = threading.Event()
        self._complete = False  # the body was read to its announced end: the connection is reusable

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body (an error document), in a transfer thread."""
        head, self._early = self._early[:limit], self._early[limit:]
        if len(head) == limit:
            return head
        loop = asyncio.get_running_loop()
        try:
            return head + await loop.run_in_executor(self._pool.executor, self._resp.read, limit - len(head))
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(describe(exc), timeout=isinstance(exc, TimeoutError)) from None

    def take_whole(self) -> bytes | None:
        """The whole body when it was all read with the headers, else None. Once taken, the connection
        goes back to the pool at once; the transfer slot is held until `release` (so at most
        `max_transfers` such bodies are held in memory)."""
        if not self._early or len(self._early) != self._resp.length:
            return None
        whole, self._early = self._early, b""
        self._complete = True
        self._give_back()
        return whole

    async def pump_into(self, fd: int, hash_update: HashUpdate, on_bytes: OnBytes, skip: int = 0) -> None:
        """Run `pump` in a transfer thread; `on_bytes` runs on the event loop after each chunk written.

        If this is cancelled, the pump is stopped and waited for (its socket is shut down, so that is
        quick): the thread must be done with `fd` before the caller closes it."""
        counts = Coalesced(asyncio.get_running_loop(), on_bytes)
        job = self._pool.executor.submit(self.pump, fd, hash_update, counts.add, skip)
        cancelled = False
        while True:
            try:
                await asyncio.wrap_future(job)
                break
            except asyncio.CancelledError:
                cancelled = True
                self.stop()
                if job.cancelled():  # cancelled before a thread took it up: it never touches `fd`
                    break
            except Stopped:
                break
        if cancelled:
            raise asyncio.CancelledError
        # Every `on_bytes` the pump queued has run by now: the job's completion was queued after them.

    def pump(
        self,
        fd: int,
        hash_update: HashUpdate,
        on_chunk: Callable[[int], None],
        skip: int = 0,
    ) -> None:
        """Read the whole body into `fd` (after dropping its first `skip` bytes), hashing it; calls
        `on_chunk(n)` (in this thread) after every `n` bytes written. Blocking: run it in `executor`.

        Raises BodyBroken when the connection fails, Stopped when `stop()` was called, and OSError
        when writing the file fails."""
        sink = FileSink(fd, hash_update, on_chunk, skip)
        if self._resp.chunked:
            self._pump_chunked(sink)
            return
        remaining = self._resp.length  # None: the body ends with the connection
        if self._early:  # read with the headers: written first
            early, self._early = self._early, b""
            sink.take(memoryview(early))
            remaining = None if remaining is None else remaining - len(early)
        buffer = memoryview(bytearray(BUFFER if remaining is None else min(BUFFER, remaining)))
        while remaining is None or remaining > 0:
            want = len(buffer) if remaining is None else min(len(buffer), remaining)
            # At most one receive (http.client's reader first hands over what it read with the
            # headers): what has arrived goes on at once, even if the upstream stalls.
            count = self._received(self._resp.fp.readinto1, buffer[:want])
            if not count:
                break  # a connection closed early: the caller compares sizes
            sink.take(buffer[:count])
            remaining = None if remaining is None else remaining - count
        self._complete = remaining == 0

    def _pump_chunked(self, sink: FileSink) -> None:
        """A chunk-coded body, through http.client's decoder."""
        while True:
            data = memoryview(self._received(self._resp.read1, BUFFER))
            if not data:
                self._complete = self._resp.isclosed()
                return
            sink.take(data)

    def _received(self, receive: Callable[[_A], _R], arg: _A) -> _R:
        """`receive(arg)`, its failure a BodyBroken (or Stopped after `stop()`), and an end of the
        stream Stopped too when `stop()` shut the socket down."""
        if self._stop.is_set():
            raise Stopped
        try:
            got = receive(arg)
        except (OSError, http.client.HTTPException) as exc:
            if self._stop.is_set():
                raise Stopped from None
            raise BodyBroken(describe(exc)) from None
        if not got and self._stop.is_set():  # the shut-down socket reads as the end
            raise Stopped
        return got

    def stop(self) -> None:
        """Make a running `pump` end soon (from any thread): shuts the socket down."""
        self._stop.set()
        if self._conn is not None:
            _shut_down(self._conn)
        if self._sock is not None:  # held by the response alone after a `Connection: close` answer
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Give the connection back if the body was read to its end, else close it; frees the slot."""
        if self._slot:
            self._slot = False
            self._pool.active -= 1
        self._give_back()

    def _give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete and not self._resp.will_close and not self._stop.is_set():
            self._resp.close()  # marks the exchange finished, so the connection can send again
            self._sock = None  # the pool's again: `stop` must not touch it
            self._pool.give_back(self._key, conn)
        else:
            # A `Connection: close` answer holds the socket itself (http.client hands it over): close both.
            self._resp.close()
            self._pool.discard(conn)


def _shut_down(conn: http.client.HTTPConnection) -> None:
    """Shut a connection's socket down (from any thread): a thread blocked reading it returns."""
    if conn.sock is not None:
        with contextlib.suppress(OSError):  # already closed
            conn.sock.shutdown(socket.SHUT_RDWR)
