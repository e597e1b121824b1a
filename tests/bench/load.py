"""Load from standard tools, every one bounded in time: curl streams, wrk rates, skopeo pulls."""

from __future__ import annotations

import hashlib
import http.client
import re
import subprocess
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.skopeo import skopeo_copy

CURL_MAX_S = 180
_CURL_FORMAT = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"
_MIB = 1024 * 1024


class BenchError(RuntimeError):
    """A scenario could not run as specified (a tool failed, a server answered wrong)."""


@dataclass(frozen=True)
class Transfer:
    """One curl download."""

    status: int
    size: int
    ttfb: float  # seconds to the first byte
    total: float  # seconds to the last byte


def _curl_args(url: str, headers: Mapping[str, str] | None) -> list[str]:
    args = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(CURL_MAX_S), "-w", _CURL_FORMAT]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    return [*args, url]


def _parse_curl(out: bytes, err: bytes, url: str) -> Transfer:
    parts = out.decode(errors="replace").split()
    if len(parts) != 4:
        raise BenchError(f"curl {url}: unexpected output {out!r} {err[:300]!r}")
    return Transfer(int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]))


def curl_get(url: str, headers: Mapping[str, str] | None = None) -> Transfer:
    """GET `url` to /dev/null with curl; its timings."""
    result = subprocess.run(
        _curl_args(url, headers), capture_output=True, timeout=CURL_MAX_S + 10, check=False
    )
    return _parse_curl(result.stdout, result.stderr, url)


def curl_start(url: str) -> subprocess.Popen[bytes]:
    """Start a curl GET of `url` to /dev/null without waiting for it (`curl_finish` reaps it)."""
    return subprocess.Popen(_curl_args(url, None), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def curl_finish(curl: subprocess.Popen[bytes], url: str) -> Transfer:
    """Wait for a curl of `url` from `curl_start`; its timings."""
    out, err = curl.communicate(timeout=CURL_MAX_S + 10)
    return _parse_curl(out, err, url)


def curl_parallel(url: str, clients: int) -> tuple[float, list[Transfer]]:
    """`clients` curl processes GET `url` at once: (wall seconds until the last is done, transfers)."""
    deadline = time.monotonic() + CURL_MAX_S + 10
    start = time.monotonic()
    procs = [curl_start(url) for _ in range(clients)]
    try:
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
        wall = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return wall, [_parse_curl(out, err, url) for out, err in outputs]


def check_transfers(transfers: Sequence[Transfer], size: int, what: str) -> None:
    """Every transfer answered 200 with exactly `size` bytes."""
    bad = [t for t in transfers if t.status != 200 or t.size != size]
    if bad:
        raise BenchError(
            f"{what}: {len(bad)}/{len(transfers)} transfers wrong, e.g. {bad[0]} (want {size} B)"
        )


def fetch_verified(url: str, digest: str, size: int, headers: Mapping[str, str] | None = None) -> None:
    """GET `url` in Python and check the body's length and sha256 (used to warm caches, untimed)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=CURL_MAX_S)
    try:
        conn.request("GET", parts.path, headers=dict(headers or {}))
        resp = conn.getresponse()
        hasher, got = hashlib.sha256(), 0
        while chunk := resp.read(4 * _MIB):
            hasher.update(chunk)
            got += len(chunk)
    finally:
        conn.close()
    if resp.status != 200 or got != size or "sha256:" + hasher.hexdigest() != digest:
        raise BenchError(f"GET {url}: status {resp.status}, {got} bytes (want {size}), digest mismatch?")


@dataclass(frozen=True)
class WrkResult:
    """What wrk reported for one run."""

    requests: int
    seconds: float
    rps: float
    non_2xx: int
    socket_errors: int


_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(
    url: str,
    *,
    duration_s: float,
    connections: int = 64,
    threads: int = 2,
    headers: Mapping[str, str] | None = None,
) -> WrkResult:
    """`wrk -tT -cC -dDs` against `url` (GET, keep-alive); raise if over 1 % of answers are errors."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "10s"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    result = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    out = result.stdout
    total, rps = _WRK_TOTAL.search(out), _WRK_RPS.search(out)
    if result.returncode != 0 or total is None or rps is None:
        raise BenchError(f"wrk {url} failed ({result.returncode}): {out[-500:]} {result.stderr[-500:]}")
    non_2xx = int(m[1]) if (m := _WRK_NON2XX.search(out)) else 0
    socket_errors = sum(int(g) for g in m.groups()) if (m := _WRK_ERRORS.search(out)) else 0
    res = WrkResult(
        requests=int(total[1]),
        seconds=float(total[2]) * _UNIT_S[total[3]],
        rps=float(rps[1]),
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )
    if res.requests == 0 or res.non_2xx + res.socket_errors > res.requests / 100:
        raise BenchError(f"wrk {url}: {res} (over 1 % errors)")
    return res


def timed_pull(ref: str, registries_conf: Path, tmpdir: Path) -> float:
    """Seconds `skopeo copy docker://REF oci:DIR` takes (fresh destination and skopeo caches)."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    skopeo_copy(ref, tmpdir / "dest", registries_conf=registries_conf, tmpdir=tmpdir)
    return time.monotonic() - start
