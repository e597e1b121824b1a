"""The threaded transport: bodies written and hashed whole, a Range's skipped bytes dropped, connections
reused (and a stale one replaced), a stalled body stopped by cancelling its pump or closing the transport,
counts handed to the event loop with one wake-up."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from yarl import URL

from mirror.storage.writing import WRITE
from mirror.upstream.receive import Coalesced
from mirror.upstream.threaded import ThreadedResponse, ThreadedTransport
from mirror.upstream.transport import BodyBroken
from tests.support.net import BackgroundServer

BODY = bytes(range(256)) * 4096  # 1 MiB


class Server(BackgroundServer):
    """Serves BODY at /blob with keep-alive; /stall sends half of it and waits for `release`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.peers: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.peers.append(self.client_address[1])
                self.send_response(200)
                body = BODY[:5000] if self.path == "/small" else BODY
                self.send_header("Content-Length", str(len(body)))
                if self.path == "/stall-close":
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.path == "/small":
                    self.wfile.write(body)
                    return
                if self.path in ("/stall", "/stall-close"):
                    self.wfile.write(BODY[: len(BODY) // 2])
                    self.wfile.flush()
                    server.release.wait(10)
                    self.close_connection = True
                    return
                self.wfile.write(BODY)
                if self.path == "/close-after":
                    self.close_connection = True

        super().__init__(Handler, "blocking-test")

    def url(self, path: str) -> URL:
        return URL(f"http://127.0.0.1:{self.port}{path}")


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.stop()


@pytest.fixture
async def transport() -> AsyncIterator[ThreadedTransport]:
    transport = ThreadedTransport(connect_timeout=5, read_timeout=5)
    yield transport
    await transport.close()


async def fetch(
    transport: ThreadedTransport, url: URL, target: Path, skip: int = 0
) -> tuple[bytes, str, ThreadedResponse]:
    resp = await transport.send("GET", url, {})
    hasher = hashlib.sha256()
    seen: list[int] = []
    fd = await asyncio.to_thread(os.open, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        await resp.pump_into(fd, hasher.update, seen.append, skip)
    finally:
        await asyncio.to_thread(os.close, fd)
    data = await asyncio.to_thread(target.read_bytes)
    assert sum(seen) == len(data)
    return data, hasher.hexdigest(), resp


async def test_body_is_written_and_hashed_and_the_connection_reused(
    server: Server, transport: ThreadedTransport, tmp_path: Path
) -> None:
    """Three bodies in a row arrive whole and hashed, over one pooled connection."""
    for n in range(3):
        data, digest, resp = await fetch(transport, server.url("/blob"), tmp_path / f"b{n}")
        resp.release()
        assert data == BODY
        assert digest == hashlib.sha256(BODY).hexdigest()
    assert len(set(server.peers)) == 1  # one connection for all three


async def test_skip_drops_the_bytes_an_ignored_range_sent_again(
    server: Server, transport: ThreadedTransport, tmp_path: Path
) -> None:
    """`skip` drops the first bytes from the file and from the hash."""
    data, digest, resp = await fetch(transport, server.url("/blob"), tmp_path / "b", skip=1000)
    resp.release()
    assert data == BODY[1000:]
    assert digest == hashlib.sha256(BODY[1000:]).hexdigest()


async def test_a_connection_the_server_closed_is_replaced(
    server: Server, transport: ThreadedTransport, tmp_path: Path
) -> None:
    """The server closes after answering; the next request on that pooled connection fails at once and
    is sent again on a new one, unseen by the caller."""
    _, _, first = await fetch(transport, server.url("/close-after"), tmp_path / "a")
    first.release()
    data, _, second = await fetch(transport, server.url("/blob"), tmp_path / "b")
    second.release()
    assert data == BODY
    assert len(set(server.peers)) == 2


class StalledPump:
    """`pump_into` of the /stall body as a task, with the bytes it announced."""

    def __init__(self, resp: ThreadedResponse, fd: int) -> None:
        self.received = asyncio.Event()
        self.task = asyncio.create_task(resp.pump_into(fd, lambda _: None, lambda _: self.received.set()))


async def test_cancelling_a_pump_stops_a_stalled_body(
    server: Server, transport: ThreadedTransport, tmp_path: Path
) -> None:
    """A pump waiting on a stalled body ends soon when cancelled, and only once its thread is done."""
    resp = await transport.send("GET", server.url("/stall"), {})
    fd = await asyncio.to_thread(os.open, tmp_path / "s", os.O_WRONLY | os.O_CREAT)
    try:
        pump = StalledPump(resp, fd)
        await asyncio.wait_for(pump.received.wait(), 5)  # the bytes before the stall arrive
        pump.task.cancel()
        done, _ = await asyncio.wait([pump.task], timeout=5)
        assert done
        assert pump.task.cancelled()
    finally:
        server.release.set()
        resp.release()
        await asyncio.to_thread(os.close, fd)


async def test_cancelling_a_pump_stops_a_stalled_body_answered_with_connection_close(
    server: Server, tmp_path: Path
) -> None:
    """A `Connection: close` answer hands its socket to the response; cancelling still shuts it down
    at once, not after the 30 s read time-out."""
    transport = ThreadedTransport(connect_timeout=5, read_timeout=30)
    resp = await transport.send("GET", server.url("/stall-close"), {})
    fd = await asyncio.to_thread(os.open, tmp_path / "s", os.O_WRONLY | os.O_CREAT)
    try:
        pump = StalledPump(resp, fd)
        await asyncio.wait_for(pump.received.wait(), 5)
        pump.task.cancel()
        done, _ = await asyncio.wait([pump.task], timeout=5)
        assert done
        assert pump.task.cancelled()
    finally:
        server.release.set()
        resp.release()
        await transport.close()
        await asyncio.to_thread(os.close, fd)


async def test_closing_the_transport_unblocks_a_thread_reading_a_stalled_body(
    server: Server, tmp_path: Path
) -> None:
    """A 30 s read time-out does not hold a transfer thread once the transport is closed."""
    transport = ThreadedTransport(connect_timeout=5, read_timeout=30)
    resp = await transport.send("GET", server.url("/stall"), {})
    fd = await asyncio.to_thread(os.open, tmp_path / "s", os.O_WRONLY | os.O_CREAT)
    try:
        pump = StalledPump(resp, fd)
        await asyncio.wait_for(pump.received.wait(), 5)
        await transport.close()
        done, _ = await asyncio.wait([pump.task], timeout=5)
        assert done, "a 30 s read time-out did not hold the thread"
        error = pump.task.exception()
        assert error is None or isinstance(error, BodyBroken)
    finally:
        server.release.set()
        resp.release()
        await asyncio.to_thread(os.close, fd)


async def test_short_writes_go_on_from_the_byte_the_disk_stopped_at(
    server: Server, transport: ThreadedTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that takes fewer bytes than offered is continued, not lost."""
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:4093])))
    data, _, resp = await fetch(transport, server.url("/blob"), tmp_path / "b")
    resp.release()
    assert data == BODY


async def test_no_write_is_larger_than_the_write_step(
    server: Server, transport: ThreadedTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 MiB receive goes into the file in writes of at most `WRITE` bytes, whole and in order."""
    real, sizes = os.write, []

    def write(fd: int, data: memoryview) -> int:
        sizes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    data, _, resp = await fetch(transport, server.url("/blob"), tmp_path / "b")
    resp.release()
    assert data == BODY
    assert max(sizes) == WRITE


async def test_a_small_body_arrives_whole_and_hashed(
    server: Server, transport: ThreadedTransport, tmp_path: Path
) -> None:
    """A body smaller than the receive buffer (most of it read along with the headers) arrives whole."""
    data, digest, resp = await fetch(transport, server.url("/small"), tmp_path / "s")
    resp.release()
    assert data == BODY[:5000]
    assert digest == hashlib.sha256(BODY[:5000]).hexdigest()


async def test_counts_added_before_the_loop_runs_arrive_in_one_call() -> None:
    """Counts added while the loop is busy reach `on_bytes` summed, in one call."""
    seen: list[int] = []
    counts = Coalesced(asyncio.get_running_loop(), seen.append)
    for count in (3, 4, 5):  # the loop runs nothing in between, as while it is busy elsewhere
        counts.add(count)
    await asyncio.sleep(0)
    assert seen == [12]
    counts.add(1)
    await asyncio.sleep(0)
    assert seen == [12, 1]
