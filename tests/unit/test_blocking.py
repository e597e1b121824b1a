"""Blob bodies over blocking connections: written and hashed whole, a Range's skipped bytes dropped,
connections reused (and a stale one replaced), a stalled body stopped from another thread."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from yarl import URL

from mirror.upstream.blocking import BlockingResponse, BodyBroken, Pool, Stopped
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
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                if self.path == "/stall":
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
def pool() -> Iterator[Pool]:
    pool = Pool(connect_timeout=5, read_timeout=5)
    yield pool
    pool.close()


def fetch(pool: Pool, url: URL, target: Path, skip: int = 0) -> tuple[bytes, str, BlockingResponse]:
    resp = pool.request("GET", url, {})
    hasher = hashlib.sha256()
    seen: list[int] = []
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        resp.pump(fd, hasher.update, seen.append, skip)
    finally:
        os.close(fd)
    assert sum(seen) == target.stat().st_size
    return target.read_bytes(), hasher.hexdigest(), resp


def test_body_is_written_and_hashed_and_the_connection_reused(
    server: Server, pool: Pool, tmp_path: Path
) -> None:
    for n in range(3):
        data, digest, resp = fetch(pool, server.url("/blob"), tmp_path / f"b{n}")
        resp.release()
        assert data == BODY
        assert digest == hashlib.sha256(BODY).hexdigest()
    assert len(set(server.peers)) == 1  # one connection for all three


def test_skip_drops_the_bytes_an_ignored_range_sent_again(server: Server, pool: Pool, tmp_path: Path) -> None:
    data, digest, resp = fetch(pool, server.url("/blob"), tmp_path / "b", skip=1000)
    resp.release()
    assert data == BODY[1000:]
    assert digest == hashlib.sha256(BODY[1000:]).hexdigest()


def test_a_connection_the_server_closed_is_replaced(server: Server, pool: Pool, tmp_path: Path) -> None:
    """The server closes after answering; the next request on that pooled connection fails at once and
    is sent again on a new one, unseen by the caller."""
    _, _, first = fetch(pool, server.url("/close-after"), tmp_path / "a")
    first.release()
    data, _, second = fetch(pool, server.url("/blob"), tmp_path / "b")
    second.release()
    assert data == BODY
    assert len(set(server.peers)) == 2


class StalledPump:
    """`pump` of the /stall body on a thread of its own, with the exception it ended with (if any)."""

    def __init__(self, resp: BlockingResponse, target: Path) -> None:
        self.outcome: list[BaseException] = []
        self.received = threading.Event()
        self._resp = resp
        self._fd = os.open(target, os.O_WRONLY | os.O_CREAT)
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._resp.pump(self._fd, lambda _: None, lambda _: self.received.set())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            self.outcome.append(exc)

    def close(self, server: Server) -> None:
        server.release.set()
        self.thread.join(5)
        os.close(self._fd)


def test_stop_ends_a_pump_waiting_on_a_stalled_body(server: Server, pool: Pool, tmp_path: Path) -> None:
    resp = pool.request("GET", server.url("/stall"), {})
    pump = StalledPump(resp, tmp_path / "s")
    try:
        assert pump.received.wait(5), "the bytes before the stall arrive"
        resp.stop()
        pump.thread.join(5)
        assert not pump.thread.is_alive()
        assert len(pump.outcome) == 1
        assert isinstance(pump.outcome[0], Stopped)
    finally:
        pump.close(server)
        resp.release()


def test_closing_the_pool_unblocks_a_thread_reading_a_stalled_body(server: Server, tmp_path: Path) -> None:
    pool = Pool(connect_timeout=5, read_timeout=30)
    pump = StalledPump(pool.request("GET", server.url("/stall"), {}), tmp_path / "s")
    try:
        assert pump.received.wait(5)
        pool.close()
        pump.thread.join(5)
        assert not pump.thread.is_alive(), "a 30 s read time-out did not hold the thread"
        assert pump.outcome == [] or isinstance(pump.outcome[0], BodyBroken)
    finally:
        pump.close(server)


def test_short_writes_go_on_from_the_byte_the_disk_stopped_at(
    server: Server, pool: Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:4093])))
    data, _, resp = fetch(pool, server.url("/blob"), tmp_path / "b")
    resp.release()
    assert data == BODY
