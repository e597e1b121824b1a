"""The bench's WAN shaper (tests/bench/wan.py) forwards bytes intact, late and no faster than its caps.

Only lower bounds on time: a delay line and a pacer can never deliver early, however loaded the machine.
"""

from __future__ import annotations

import hashlib
import http.client
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

import pytest

from tests.bench.wan import Pacer, Shape, Shaper
from tests.support.net import BackgroundServer

BODY = bytes(range(256)) * 4096  # 1 MiB


class _Body(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def origin() -> Iterator[BackgroundServer]:
    with BackgroundServer(_Body, "wan-origin") as server:
        yield server


def _get(port: int) -> tuple[float, float, bytes]:
    """(seconds to the response's headers, seconds to its last byte, body) of one GET on a new connection."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        first = time.monotonic() - started
        body = resp.read()
    finally:
        conn.close()
    return first, time.monotonic() - started, body


def test_pacer_serialises_bytes_at_its_rate() -> None:
    """Each reservation ends size/rate after the later of its arrival and the previous one's end."""
    pacer = Pacer(1000.0)
    assert pacer.slot(500, not_before=10.0) == pytest.approx(10.5)
    assert pacer.slot(500, not_before=10.1) == pytest.approx(11.0)
    assert pacer.slot(100, not_before=20.0) == pytest.approx(20.1)
    assert Pacer(None).slot(10**9, not_before=3.0) == 3.0


def test_bytes_pass_through_unchanged(origin: BackgroundServer) -> None:
    """A response through the shaper is the origin's, byte for byte."""
    with Shaper(origin.port, Shape(latency_s=0.001, total_rate=None)) as shaper:
        _, _, body = _get(shaper.port)
        assert hashlib.sha256(body).digest() == hashlib.sha256(BODY).digest()
        assert shaper.stats.connections == 1
        assert shaper.stats.bytes_down >= len(BODY)


def test_first_answer_waits_for_the_handshake_and_a_round_trip(origin: BackgroundServer) -> None:
    """A new connection's answer comes at least two round trips (four one-way latencies) after connect."""
    latency = 0.05
    with Shaper(origin.port, Shape(latency_s=latency, total_rate=None)) as shaper:
        first, _, _ = _get(shaper.port)
    assert first >= 4 * latency


def test_a_connection_gets_no_more_than_its_rate(origin: BackgroundServer) -> None:
    """1 MiB at 5 MB/s per connection takes at least 0.2 s."""
    with Shaper(origin.port, Shape(latency_s=0.0, rate=5e6, total_rate=None)) as shaper:
        _, total, body = _get(shaper.port)
    assert len(body) == len(BODY)
    assert total >= len(BODY) / 5e6


def test_connections_share_the_total_rate(origin: BackgroundServer) -> None:
    """Two concurrent 1 MiB answers at 10 MB/s in all are done no sooner than 2 MiB / 10 MB/s."""
    with Shaper(origin.port, Shape(latency_s=0.0, total_rate=10e6)) as shaper, ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        answers = list(pool.map(lambda _: _get(shaper.port), range(2)))  # a failed GET raises here
        assert time.monotonic() - started >= 2 * len(BODY) / 10e6
        assert [body for _, _, body in answers] == [BODY, BODY]
        assert shaper.stats.bytes_down >= 2 * len(BODY)
