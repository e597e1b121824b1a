"""A WAN-shaped link on loopback (issue 17, item 5): a TCP forwarder on 127.0.0.1 that adds a one-way
latency to every byte in each direction and caps bandwidth, per connection and over all connections.

Loopback answers in microseconds at GB/s, which hides what a real network makes a mirror pay: a round
trip per request it serialises (a token, a HEAD before a GET, a new connection), and a link that its
clients share. No kernel qdisc is available here, so this proxy models the link instead:

- each connection's first bytes towards the server leave one round trip (the TCP handshake) after the
  client connected, then every chunk arrives `latency_s` after it was sent;
- bytes are serialised at `rate` per connection and at `total_rate` over all connections (per direction,
  like a symmetric link), before the propagation delay;
- a connection buffers at most its bandwidth-delay product plus `SLACK_BYTES` per direction, then stops
  reading (the sender feels TCP back-pressure, as behind a real bottleneck).

`Shaper` runs in a thread of its own (the bench is synchronous), `python -m tests.bench.wan` on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field

CHUNK = 256 * 1024  # bytes read per call: fewer wake-ups per MiB than 64 KiB, still fine-grained pacing
SLACK_BYTES = 2 * 1024 * 1024  # buffered beyond the bandwidth-delay product, per direction
UNCAPPED_BUFFER = 64 * 1024 * 1024  # per direction when no rate caps the link
_EOF = b""


@dataclass(frozen=True)
class Shape:
    """The link: one-way latency (s), bytes/s per connection and over all, per direction (None: no cap)."""

    latency_s: float = 0.030
    rate: float | None = None
    total_rate: float | None = 100e6

    def buffer_bytes(self) -> int:
        """What one direction of a connection may hold: the bytes in flight on the link, plus slack."""
        caps = [r for r in (self.rate, self.total_rate) if r]
        if not caps:
            return UNCAPPED_BUFFER
        return int(min(caps) * self.latency_s) + SLACK_BYTES

    def describe(self) -> str:
        def mb(rate: float | None) -> str:
            return "none" if rate is None else f"{rate / 1e6:g} MB/s"

        return (
            f"{self.latency_s * 1000:g} ms one way, {mb(self.rate)} per connection, "
            f"{mb(self.total_rate)} in all"
        )


class Pacer:
    """Serialises bytes at `rate`: a virtual clock of when the link is next free."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._free_at = 0.0

    def slot(self, size: int, not_before: float) -> float:
        """When `size` bytes that can leave at `not_before` have left (reserved now, in arrival order)."""
        if self.rate is None:
            return not_before
        self._free_at = max(self._free_at, not_before) + size / self.rate
        return self._free_at


@dataclass
class Stats:
    """What went through: connections accepted, bytes towards the server (up) and the client (down)."""

    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass
class _Direction:
    """One direction of one connection: chunks in flight with the time each reaches the other end."""

    pacers: tuple[Pacer, ...]
    limit: int
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    held: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, data: bytes, not_before: float, latency_s: float) -> None:
        done = not_before
        for pacer in self.pacers:  # the slowest of per-connection and shared serialisation
            done = max(done, pacer.slot(len(data), not_before))
        self.queue.append((done + latency_s, data))
        self.held += len(data)
        self.changed.set()


class Link:
    """The shaped forwarding of every connection to `target` (host, port), on the running loop."""

    def __init__(self, target: tuple[str, int], shape: Shape) -> None:
        self.target = target
        self.shape = shape
        self.stats = Stats()
        self._up_total = Pacer(shape.total_rate)
        self._down_total = Pacer(shape.total_rate)
        self._handlers: set[asyncio.Task[None]] = set()
        #: Every stream writer of a connection not yet closed, client's and server's: held here, so none
        #: is ever dropped unclosed (a ResourceWarning when the collector finds it), and closed by `close()`.
        self._writers: set[asyncio.StreamWriter] = set()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """Forward one client connection, shaped, until both sides are done, one breaks or `close()`."""
        me = asyncio.current_task()
        assert me is not None
        self._handlers.add(me)
        self._writers.add(client_w)
        try:
            await self._forward(client_r, client_w)
        except asyncio.CancelledError:
            pass  # `close()`: the connection ends here (asyncio's stream callback chokes on a cancelled task)
        finally:
            self._handlers.discard(me)
            self._close_writer(client_w)

    def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        self._writers.discard(writer)

    async def _forward(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        accepted = time.monotonic()
        self.stats.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            return  # the client's writer is closed by `handle`
        self._writers.add(server_w)
        limit = self.shape.buffer_bytes()
        up = _Direction((Pacer(self.shape.rate), self._up_total), limit)
        down = _Direction((Pacer(self.shape.rate), self._down_total), limit)
        handshake_done = accepted + 2 * self.shape.latency_s  # SYN, SYN-ACK: one round trip
        pumps = [
            asyncio.create_task(self._read(client_r, up, handshake_done, up=True)),
            asyncio.create_task(self._write(up, server_w)),
            asyncio.create_task(self._read(server_r, down, 0.0, up=False)),
            asyncio.create_task(self._write(down, client_w)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)  # all done, or one side broke
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._close_writer(server_w)

    async def close(self) -> None:
        """Cancel every connection still open."""
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in list(self._writers):  # one whose handler never ran, or was cancelled early
            self._close_writer(writer)

    async def _read(
        self, reader: asyncio.StreamReader, way: _Direction, not_before: float, *, up: bool
    ) -> None:
        while True:
            while way.held >= way.limit:  # back-pressure: the link is full
                way.changed.clear()
                await way.changed.wait()
            try:
                data = await reader.read(CHUNK)
            except OSError:
                data = _EOF
            now = time.monotonic()
            way.put(data, max(now, not_before), self.shape.latency_s)
            if not data:
                return
            if up:
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)

    async def _write(self, way: _Direction, writer: asyncio.StreamWriter) -> None:
        while True:
            while not way.queue:
                way.changed.clear()
                await way.changed.wait()
            due, data = way.queue.popleft()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            way.held -= len(data)
            way.changed.set()
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()  # half-close, as the sender did: HTTP answers may follow
                return
            writer.write(data)
            await writer.drain()  # a broken peer raises: `handle` closes both sides


class Shaper:
    """The link on 127.0.0.1:`port` in a thread of its own; `stop()` closes it and joins the thread."""

    def __init__(self, target_port: int, shape: Shape, target_host: str = "127.0.0.1") -> None:
        self.shape = shape
        self.link: Link | None = None
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="wan-shaper", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stats(self) -> Stats:
        assert self.link is not None
        return self.link.stats

    def start(self) -> Shaper:
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise RuntimeError("the WAN shaper did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._close())
        self._loop.close()

    async def _listen(self) -> None:
        self.link = Link(self._target, self.shape)
        self._server = await asyncio.start_server(self.link.handle, "127.0.0.1", 0, limit=CHUNK)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.link is not None:
            await self.link.close()
        if self._server is not None:
            await self._server.wait_closed()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> Shaper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.wan", description=__doc__)
    parser.add_argument("target_port", type=int, help="the port on 127.0.0.1 to forward to")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="one way (default 30)")
    parser.add_argument("--rate-mb", type=float, default=0, help="MB/s per connection (0: none)")
    parser.add_argument("--total-rate-mb", type=float, default=100, help="MB/s in all (0: none)")
    args = parser.parse_args()
    shape = Shape(args.latency_ms / 1000, args.rate_mb * 1e6 or None, args.total_rate_mb * 1e6 or None)
    with Shaper(args.target_port, shape) as shaper:
        print(f"{shaper.url} -> 127.0.0.1:{args.target_port}: {shape.describe()}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
