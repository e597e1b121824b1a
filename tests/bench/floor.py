"""The floor of scenario 7: what the per-byte work of a cold blob costs on this machine with no mirror
around it, measured in the same run as the mirror, so that "CPU-s per cold GiB" can be read against it.

- `pipeline`: one thread does what a verifying, storing mirror must do for each byte, and nothing else:
  a blocking receive from the upstream (`readinto1` into one reused 1 MiB buffer), written into a new
  file on the cache's filesystem in the mirror's steps (`storage.writing.write_all`), SHA-256 from the same
  memory (hashlib, OpenSSL), and `sendfile` from that file to a curl on loopback. Its CPU is the
  thread's CPU clock, the upstream's from `/proc`, curl's from `RUSAGE_CHILDREN`.
- `sha256_cpu_s` and `write_cpu_s`: the two largest parts alone (hashing a buffer; writing a new file of
  the blob's size, in the mirror's 128 KiB writes or in others, then removing it).

Every figure is per GiB. The machine is shared: each is as noisy as the mirror's own, which is why they
are taken beside it, run for run.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from mirror.storage.writing import WRITE, write_all
from tests.bench.load import BenchError, curl_finish, curl_start
from tests.bench.procs import ProcStats, children_cpu_seconds

GIB = 1024**3
BUFFER = 1024 * 1024  # the mirror's receive buffer (mirror/upstream/receive.py)
_TIMEOUT_S = 120.0


def thread_cpu_seconds() -> float:
    """CPU seconds of the calling thread (CLOCK_THREAD_CPUTIME_ID: exact, where getrusage's split into
    user and system time goes by ticks)."""
    return time.thread_time()


@dataclass(frozen=True)
class Pipeline:
    """One blob through the one-thread pipeline: CPU-s per GiB of the thread, the upstream and curl, and
    its throughput (receiving and sending in turn, so no bound on a mirror's)."""

    cpu_s: float
    upstream_cpu_s: float
    client_cpu_s: float
    gbps: float


def pipeline(upstream_port: int, upstream_pid: int, path: str, size: int, workdir: Path) -> Pipeline:
    """GET `path` (a blob of `size` bytes) from the upstream on 127.0.0.1:`upstream_port` and pass it
    to a curl through a new file under `workdir`, receiving, writing, hashing and sending in this thread."""
    workdir.mkdir(parents=True, exist_ok=True)
    upstream = ProcStats(upstream_pid)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        curl = curl_start(url)
        try:
            listener.settimeout(_TIMEOUT_S)
            client, _ = listener.accept()
            with client:
                _bound(client)
                _read_request(client)
                before = (thread_cpu_seconds(), upstream.cpu_seconds())
                started = time.monotonic()
                _pass_through(client, upstream_port, path, size, workdir / "floor.partial")
            reaped = children_cpu_seconds()
            transfer = curl_finish(curl, url)
            wall = time.monotonic() - started
            curl_cpu = children_cpu_seconds() - reaped  # curl is the one child reaped meanwhile
        finally:
            if curl.poll() is None:  # the pipeline failed: curl is ours to end
                curl.kill()
                curl.wait()
    if transfer.status != 200 or transfer.size != size:
        raise BenchError(f"floor: curl got {transfer.status} with {transfer.size} of {size} bytes")
    per_gib = GIB / size
    return Pipeline(
        cpu_s=(thread_cpu_seconds() - before[0]) * per_gib,
        upstream_cpu_s=(upstream.cpu_seconds() - before[1]) * per_gib,
        client_cpu_s=curl_cpu * per_gib,
        gbps=size / wall / 1e9,
    )


def _bound(sock: socket.socket) -> None:
    """A blocking socket (`sendfile` needs one) whose every send and receive gives up after `_TIMEOUT_S`."""
    sock.setblocking(True)
    limit = struct.pack("ll", int(_TIMEOUT_S), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)


def _read_request(client: socket.socket) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        got = client.recv(65536)
        if not got:
            raise BenchError("floor: curl closed before its request")
        head += got


def _pass_through(client: socket.socket, port: int, path: str, size: int, partial: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_TIMEOUT_S)
    fd = os.open(partial, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200 or resp.length != size:
            raise BenchError(f"floor: upstream answered {resp.status} with length {resp.length}, not {size}")
        client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        buffer, digest = memoryview(bytearray(min(BUFFER, size) or 1)), hashlib.sha256()
        written = sent = 0
        while written < size:
            count = resp.fp.readinto1(buffer[: min(len(buffer), size - written)])
            if not count:
                raise BenchError(f"floor: upstream closed after {written} of {size} bytes")
            write_all(fd, buffer[:count])
            digest.update(buffer[:count])
            written += count
            while sent < written:
                sent += os.sendfile(client.fileno(), fd, sent, written - sent)
    finally:
        os.close(fd)
        partial.unlink(missing_ok=True)
        conn.close()


def sha256_cpu_s(size: int) -> float:
    """CPU-s per GiB of hashlib's SHA-256 over `size` bytes in 1 MiB updates of one buffer."""
    buffer, digest = memoryview(bytearray(os.urandom(min(BUFFER, size)))), hashlib.sha256()
    before = thread_cpu_seconds()
    for _ in range(max(1, size // len(buffer))):
        digest.update(buffer)
    return (thread_cpu_seconds() - before) * GIB / (max(1, size // len(buffer)) * len(buffer))


def write_cpu_s(size: int, workdir: Path, step: int = WRITE) -> float:
    """CPU-s per GiB of writing a new file of `size` bytes under `workdir` in writes of `step` bytes
    (the page cache's copy and allocation; the file is removed after, outside the measure)."""
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / "floor-write.partial"
    buffer = memoryview(bytearray(os.urandom(min(step, size))))
    count = max(1, size // len(buffer))
    fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        before = thread_cpu_seconds()
        for _ in range(count):
            data = buffer
            while data:
                data = data[os.write(fd, data) :]
        spent = thread_cpu_seconds() - before
    finally:
        os.close(fd)
        partial.unlink(missing_ok=True)
    return spent * GIB / (count * len(buffer))
