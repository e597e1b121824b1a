"""A small body read with its headers (`early_bytes`): taken whole up to the limit and not a byte past
it, its connection back in the pool at once while the transfer slot stays held, and a body that stops
coming before its end handed to the pump with what came (a real HTTP server on loopback)."""

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

from mirror.upstream.threaded import ThreadedResponse, ThreadedTransport
from tests.support.net import BackgroundServer
from tests.support.tls import TlsFiles, make_tls

SMALL = bytes(range(256)) * 20  # 5,120 bytes
LIMIT = len(SMALL)
BIG = bytes(range(256)) * 160  # 40,960 bytes: more than the reader's 8 KiB buffer


class Server(BackgroundServer):
    """/small: SMALL with keep-alive; /pause: its first half, then the rest once `release` is set;
    /pause-big: BIG's first 1,000 bytes, then the rest once `release` is set; /missing: a 404 with
    SMALL as its body."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.release = threading.Event()
        self.peers: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 64 * 1024  # headers and body in one write, as real registries send them

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.peers.append(self.client_address[1])
                self.send_response(404 if self.path == "/missing" else 200)
                if self.path == "/pause-big":
                    self.send_header("Content-Length", str(len(BIG)))
                    self.end_headers()
                    self.wfile.write(BIG[:1000])
                    self.wfile.flush()
                    server.release.wait(10)
                    self.wfile.write(BIG[1000:])
                    return
                self.send_header("Content-Length", str(len(SMALL)))
                self.end_headers()
                if self.path == "/pause":
                    self.wfile.write(SMALL[: LIMIT // 2])
                    self.wfile.flush()
                    server.release.wait(10)
                    self.wfile.write(SMALL[LIMIT // 2 :])
                    return
                self.wfile.write(SMALL)

        super().__init__(Handler, "early-test", tls)

    def url(self, path: str) -> URL:
        return URL(f"{self.scheme}://127.0.0.1:{self.port}{path}")


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
    transport = ThreadedTransport(connect_timeout=5, read_timeout=5, early_bytes=LIMIT)
    yield transport
    await transport.close()


async def pumped(resp: ThreadedResponse, target: Path) -> bytes:
    """What `pump_into` writes of `resp`'s body (checked against what it hashed)."""
    hasher = hashlib.sha256()
    fd = await asyncio.to_thread(os.open, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        await resp.pump_into(fd, hasher.update, lambda _: None)
    finally:
        await asyncio.to_thread(os.close, fd)
    data = await asyncio.to_thread(target.read_bytes)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    return data


async def test_a_body_of_early_bytes_comes_whole_and_its_connection_is_free_at_once(
    server: Server, transport: ThreadedTransport
) -> None:
    """A body exactly `early_bytes` long is taken whole; the next request reuses its connection while
    the first is still held, and each holds a transfer slot until released."""
    first = await transport.send("GET", server.url("/small"), {})
    assert first.take_whole() == SMALL
    second = await transport.send("GET", server.url("/small"), {})
    assert second.take_whole() == SMALL
    assert transport.active == 2
    first.release()
    second.release()
    assert transport.active == 0
    assert len(set(server.peers)) == 1


async def test_a_body_one_byte_past_early_bytes_is_left_to_the_pump(server: Server, tmp_path: Path) -> None:
    """With `early_bytes` one byte short of the body, nothing is taken whole: the pump receives it all."""
    transport = ThreadedTransport(connect_timeout=5, read_timeout=5, early_bytes=LIMIT - 1)
    try:
        resp = await transport.send("GET", server.url("/small"), {})
        assert resp.take_whole() is None
        assert await pumped(resp, tmp_path / "b") == SMALL
        resp.release()
    finally:
        await transport.close()


async def test_a_body_that_pauses_is_pumped_with_what_came_early(
    server: Server, transport: ThreadedTransport, tmp_path: Path
) -> None:
    """The second half comes only after the early read stopped waiting (EARLY_WAIT): the headers are
    not held for it, and the pump writes the first half, then receives the rest."""
    resp = await asyncio.wait_for(transport.send("GET", server.url("/pause"), {}), 5)
    assert resp.take_whole() is None
    server.release.set()
    assert await pumped(resp, tmp_path / "p") == SMALL
    resp.release()


async def test_an_error_body_is_read_whole_by_read(server: Server, transport: ThreadedTransport) -> None:
    """A 404's body is never read early, and `read` gets all of it."""
    resp = await transport.send("GET", server.url("/missing"), {})
    assert resp.status == 404
    assert resp.take_whole() is None
    assert await resp.read(2 * LIMIT) == SMALL
    resp.release()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, TlsFiles]]:
    tls = make_tls(tmp_path / "tls")
    srv = Server(tls)
    try:
        yield srv, tls
    finally:
        srv.release.set()
        srv.stop()


async def test_over_tls_a_small_body_comes_whole_and_a_paused_one_loses_no_byte(
    tls_server: tuple[Server, TlsFiles], tmp_path: Path
) -> None:
    """Over TLS (where a receive that finds no whole record raises): a small body is taken whole, and a
    body larger than the reader's buffer that pauses after its first kilobyte reaches the pump with
    every byte (the early read never loses what the reader had buffered)."""
    server, tls = tls_server
    transport = ThreadedTransport(connect_timeout=5, read_timeout=5, early_bytes=len(BIG))
    transport._tls.load_verify_locations(tls.ca)
    try:
        resp = await transport.send("GET", server.url("/small"), {})
        assert resp.take_whole() == SMALL
        resp.release()
        resp = await asyncio.wait_for(transport.send("GET", server.url("/pause-big"), {}), 5)
        assert resp.take_whole() is None
        server.release.set()
        assert await asyncio.wait_for(pumped(resp, tmp_path / "t"), 10) == BIG
        resp.release()
    finally:
        await transport.close()
