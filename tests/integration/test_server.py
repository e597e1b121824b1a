"""`mirror serve` as a process under connection pressure: open-file limits, a connection limit, idle and
slow-header connections, malformed requests, running out of descriptors; every stderr line structured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.integration.fake_upstream import FakeUpstream
from tests.support.mirrorproc import MirrorProcess

StartMirror = Callable[..., Awaitable[MirrorProcess]]


@pytest.fixture
async def mirror_process(tmp_path: Path, upstream: TestServer) -> AsyncIterator[StartMirror]:
    """Start `python -m mirror serve` against the fake upstream; settings as MIRROR_* values."""
    started: list[MirrorProcess] = []

    async def start(open_files: tuple[int, int] | None = None, **settings: object) -> MirrorProcess:
        env = {f"MIRROR_{k.upper()}": str(v) for k, v in settings.items()}
        url = str(upstream.make_url("")).rstrip("/")
        proc = MirrorProcess(tmp_path / f"mirror{len(started)}", url, env=env, open_files=open_files)
        started.append(proc)
        return await asyncio.to_thread(proc.start)

    yield start
    for proc in started:
        await asyncio.to_thread(proc.stop)


async def connect(mirror: MirrorProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", mirror.port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the mirror closes the connection (fails past `seconds`)."""
    started = time.monotonic()
    await asyncio.wait_for(reader.read(), seconds)
    return time.monotonic() - started


async def get(mirror: MirrorProcess, path: str) -> tuple[int, bytes]:
    reader, writer = await connect(mirror)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def served_again(mirror: MirrorProcess, within: float) -> bool:
    """Whether `GET /v2/` is answered 200 before `within` seconds have passed (polled)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, ConnectionError):
            if (await asyncio.wait_for(get(mirror, "/v2/"), 1))[0] == 200:
                return True
        await asyncio.sleep(0.2)
    return False


async def assert_all_structured(mirror: MirrorProcess) -> list[dict[str, object]]:
    """Every line the process wrote is one JSON object (no plain text, no bare traceback)."""
    events = [json.loads(line) for line in await asyncio.to_thread(mirror.log_lines)]
    assert events
    return events


async def metric(mirror: MirrorProcess, name: str) -> float:
    return await asyncio.to_thread(mirror.metric, name)


async def test_soft_open_file_limit_is_raised_to_the_hard_one(mirror_process: StartMirror) -> None:
    """Started with 512 soft / 2048 hard open files, the mirror runs with 2048 and bounds connections
    below that."""
    mirror = await mirror_process(open_files=(512, 2048))
    assert mirror.proc is not None
    limits = await asyncio.to_thread(Path(f"/proc/{mirror.proc.pid}/limits").read_text)
    assert [line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files")] == [
        ["2048", "2048"]
    ]
    listening = [e for e in await assert_all_structured(mirror) if e["event"] == "mirror_listening"]
    assert listening[0]["open_files"] == 2048
    assert listening[0]["max_connections"] == 2048 - 256


async def test_slowloris_is_closed_after_the_header_timeout(mirror_process: StartMirror) -> None:
    """A client that sends its headers a byte at a time is closed `header_timeout` after its first byte."""
    mirror = await mirror_process(header_timeout=1, idle_timeout=60)
    reader, writer = await connect(mirror)
    writer.write(b"GET /v2/ HTTP/1.1\r\n")

    async def dribble() -> None:
        for _ in range(100):
            await asyncio.sleep(0.2)
            writer.write(b"X")

    dribbling = asyncio.create_task(dribble())
    try:
        assert await closed_within(reader, 5) < 3
    finally:
        dribbling.cancel()
        writer.close()


async def test_idle_connection_is_closed_after_the_idle_timeout(mirror_process: StartMirror) -> None:
    """A connection that never sends a byte, or idles after a response, is closed after `idle_timeout`."""
    mirror = await mirror_process(idle_timeout=1)
    silent, silent_writer = await connect(mirror)
    kept, kept_writer = await connect(mirror)
    kept_writer.write(b"GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n")
    assert (await kept.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert await closed_within(silent, 5) < 3
    assert await closed_within(kept, 5) < 3
    silent_writer.close()
    kept_writer.close()


async def test_connections_past_the_limit_get_503_at_once(mirror_process: StartMirror) -> None:
    """Past `max_connections` a new connection is answered 503 UNAVAILABLE at once; once idle ones are
    closed new clients are served again; the refusals are counted."""
    mirror = await mirror_process(max_connections=16, idle_timeout=2)
    held = [await connect(mirror) for _ in range(16)]
    await asyncio.sleep(0.2)  # every connection accepted before the next one
    status, body = await get(mirror, "/v2/")
    assert status == 503
    assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
    for reader, _ in held:
        await closed_within(reader, 5)
    assert (await get(mirror, "/v2/"))[0] == 200
    assert await metric(mirror, "mirror_connections_refused_total") >= 1
    for _, writer in held:
        writer.close()


async def test_idle_flood_at_a_low_open_file_limit(mirror_process: StartMirror) -> None:
    """300 idle connections to a mirror with 300 open files: the excess get 503, no traceback is
    logged, and a normal client is served once the idle ones time out."""
    mirror = await mirror_process(open_files=(300, 300), idle_timeout=1)
    flood = await asyncio.gather(*(connect(mirror) for _ in range(300)))
    assert await served_again(mirror, within=10)
    for _, writer in flood:
        writer.close()
    events = await assert_all_structured(mirror)
    assert not [e for e in events if "exception" in e]


async def test_out_of_descriptors_is_one_log_line_and_a_metric(mirror_process: StartMirror) -> None:
    """When accepts fail with EMFILE, the log gets one line per interval, not a traceback per accept,
    the failures are counted, and the mirror serves again once descriptors are free."""
    mirror = await mirror_process(open_files=(100, 100), max_connections=10000, idle_timeout=2)
    flood = await asyncio.gather(*(connect(mirror) for _ in range(150)))
    await asyncio.sleep(0.5)
    for _, writer in flood:
        writer.close()
    assert await served_again(mirror, within=10)
    assert await metric(mirror, "mirror_open_files_exhausted_total") >= 1
    events = await assert_all_structured(mirror)
    exhausted = [e for e in events if e["event"] == "open_files_exhausted"]
    assert 1 <= len(exhausted) <= 2
    assert not [e for e in events if "exception" in e]


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /v2/ HTTP/1.1\r\nHost: m\r\nBad Header\r\n\r\n", id="header-without-colon"),
        pytest.param(b"GET /v2/ HTTP/9.9\r\nHost: m\r\n\r\n", id="http-version"),
        pytest.param(b"GET /v2/\x00 HTTP/1.1\r\nHost: m\r\n\r\n", id="nul-in-target"),
        pytest.param(b"GET /v2/ HTTP/1.1\r\nContent-Length: x\r\n\r\n", id="bad-content-length"),
    ],
)
async def test_malformed_request_gets_registry_error_json(
    mirror_process: StartMirror, request_bytes: bytes
) -> None:
    """A request aiohttp's parser refuses gets 400 with a registry error document, and one structured
    log line without a traceback."""
    mirror = await mirror_process()
    reader, writer = await connect(mirror)
    writer.write(request_bytes)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400"
    assert b"application/json" in head
    assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
    events = await assert_all_structured(mirror)
    assert [e for e in events if e["event"] == "request_malformed"]
    assert not [e for e in events if "exception" in e]


async def test_sigterm_exits_within_the_grace_whatever_downloads_do(
    mirror_process: StartMirror, fake: FakeUpstream
) -> None:
    """SIGTERM with `shutdown_grace = 2`, two stalled downloads and their clients: the process exits
    within the grace plus 2 s, and no temp file is left."""
    stalled = [fake.add_blob(bytes([n]) * 3_000_000) for n in range(2)]
    for digest in stalled:
        fake.faults[digest] = "stall_midway"
    mirror = await mirror_process(shutdown_grace=2)
    readers = []
    for digest in stalled:
        reader, writer = await connect(mirror)
        writer.write(f"GET /v2/library/x/blobs/{digest} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        readers.append((reader, writer))
    started = time.monotonic()
    status = await asyncio.to_thread(mirror.stop)
    took = time.monotonic() - started
    assert status == 0
    assert took < 2 + 2
    assert not await asyncio.to_thread(lambda: list((mirror.cache_dir / "tmp").iterdir()))
    assert not [e for e in await assert_all_structured(mirror) if "exception" in e]
    for _, writer in readers:
        writer.close()
