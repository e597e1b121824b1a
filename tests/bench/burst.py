"""Scenario 12: a burst of cold small blobs, the per-request cost of a cold pull without its bytes.

`BURST_COUNT` blobs of 2-8 KiB (seeded random bytes, pushed into the upstream's storage once and kept
with the seed) are fetched `BURST_CLIENTS` at a time, each body hashed, through a fresh mirror, a fresh
reference, or straight from the upstream. Sample keys: `<who>` the server's CPU microseconds per
request (the upstream's own for the limit), `<who>_upstream_us` the upstream's CPU per request while it
fed that server, `<who>_wall_us` wall microseconds per request. CPU comes from /proc/PID/stat.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.bench.load import BenchError
from tests.bench.procs import ProcStats
from tests.bench.scenarios import rotate
from tests.bench.seed import upload_blob
from tests.bench.stack import Env, Sample
from tests.support.registry import Registry

BURST_COUNT = 300
BURST_CLIENTS = 8  # connections at once, like a client pulling a few layers in parallel
BURST_NAME = "bench/burst"
_SIZES = (2048, 8192)
_SEED = 12
_TIMEOUT_S = 60


def burst_blobs() -> list[bytes]:
    """The blobs of the burst, the same every run."""
    rng = random.Random(_SEED)
    return [rng.randbytes(rng.randint(*_SIZES)) for _ in range(BURST_COUNT)]


def ensure_burst(upstream: Registry, storage: Path) -> list[str]:
    """The burst's digests, pushed through `upstream` into its storage unless a run before did."""
    marker = storage.parent / f"burst-{BURST_COUNT}-{_SEED}.json"
    if marker.is_file():
        return list(json.loads(marker.read_text()))
    digests = []
    for data in burst_blobs():
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        upload_blob(upstream, BURST_NAME, data, digest)
        digests.append(digest)
    partial = marker.with_suffix(".partial")
    partial.write_text(json.dumps(digests))
    partial.rename(marker)  # written last: a half-pushed burst is pushed again
    return digests


def fetch_all(base: str, digests: list[str]) -> float:
    """GET every blob, `BURST_CLIENTS` keep-alive connections at once, checking each body's digest;
    the wall seconds for all."""
    host, _, port = base.removeprefix("http://").rpartition(":")
    local = threading.local()

    def get(digest: str) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=_TIMEOUT_S)
        conn.request("GET", f"/v2/{BURST_NAME}/blobs/{digest}")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200 or "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise BenchError(f"{base}: GET {digest} answered {resp.status} with {len(body)} wrong bytes")

    start = time.monotonic()
    with ThreadPoolExecutor(BURST_CLIENTS) as pool:
        list(pool.map(get, digests))
    return time.monotonic() - start


def cold_burst(env: Env, run: int) -> Sample:
    """12. `BURST_COUNT` cold small blobs, `BURST_CLIENTS` at a time: CPU and wall µs per request."""
    digests = ensure_burst(env.upstream, env.storage)
    upstream = ProcStats(env.upstream.pid)
    sample: Sample = {}
    for who in rotate(run):
        with env.cold(who, f"burst-{run}-{who}") as target:
            server = ProcStats(target.pid) if target.pid is not None else upstream
            env.upstream_mark()  # the upstream is quiet before the window opens
            cpu, fed = server.cpu_seconds(), upstream.cpu_seconds()
            with target.measure(sample):
                wall = fetch_all(target.url, digests)
                target.settle(digests)
            cpu, fed = server.cpu_seconds() - cpu, upstream.cpu_seconds() - fed
        sample[who] = cpu / len(digests) * 1e6
        sample[f"{who}_wall_us"] = wall / len(digests) * 1e6
        if who != "limit":
            sample[f"{who}_upstream_us"] = fed / len(digests) * 1e6
    return sample
