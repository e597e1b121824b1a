"""`python -m tests.bench.bigstore`: a mirror on a store of many small blobs (issue 17, item 4).

Seeds N blobs with the store's own API (cached per N under the work directory), then starts `mirror
serve` on a copy and measures: seconds from spawn to `/readyz` 200, RSS then and once the integrity pass
is done, the median `/metrics` scrape, and with `cache_max_bytes` set to keep about 13 % of the store, how
long the start-up eviction takes (blobs a second). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mirror.storage.blobs import BlobStore
from tests.support.net import free_port, raw_request, wait_http
from tests.support.polling import poll
from tests.support.procs import stop_process
from tests.support.store import put_blob

WORKDIR = Path(__file__).parents[2] / "bench-results" / "bigstore"  # seeds are kept here between runs
BLOB = 256  # bytes per blob: small, so the index and not the bytes is what grows
SEED_BATCH = 1000  # blobs committed per SQLite transaction while seeding


def seed(cache_dir: Path, count: int) -> None:
    """`count` distinct blobs committed through the store (blocking)."""
    store = BlobStore(cache_dir)
    try:
        store.recover()
        for start in range(0, count, SEED_BATCH):
            with store._cache.transact():  # one SQLite transaction per batch, not per blob
                for n in range(start, min(start + SEED_BATCH, count)):
                    put_blob(store, n.to_bytes(8, "big") * (BLOB // 8))
    finally:
        store.close()


def rss_mib(pid: int) -> dict[str, float]:
    """Resident memory in MiB: all of it, the heap's (anonymous) part, and file pages (SQLite's mmap)."""
    fields = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file"}
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, *rest = line.split()
        if key in fields:
            found[fields[key]] = round(int(rest[0]) / 1024, 1)
    return found


def logged(log: Path, event: str) -> dict[str, object] | None:
    """The mirror's first JSON log line of `event`, if it has one yet."""
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        if f'"event": "{event}"' in line:
            entry = json.loads(line)
            return entry if isinstance(entry, dict) else None
    return None


def measure(cache_dir: Path, workdir: Path, limit: int | None, python: Path) -> dict[str, object]:
    """One start of the mirror on `cache_dir`: the figures of the module docstring."""
    port, log = free_port(), workdir / "mirror.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env |= {"MIRROR_LOG_FORMAT": "json", "MIRROR_OFFLINE": "true", "MIRROR_LISTEN": f"127.0.0.1:{port}"}
    if limit is not None:
        env["MIRROR_CACHE_MAX_BYTES"] = str(limit)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "mirror", "serve", "--cache-dir", str(cache_dir)],
            cwd=python.parents[2],  # the checkout whose venv it is: `-m mirror` imports that code
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", 600, ok_statuses={200}, proc=proc)
        figures: dict[str, object] = {"seconds_to_ready": time.monotonic() - started}
        figures["rss_ready_mib"] = rss_mib(proc.pid)
        scrapes = []
        for _ in range(10):
            t0 = time.monotonic()
            raw_request("GET", f"{url}/metrics")
            scrapes.append(time.monotonic() - t0)
        figures["scrape_ms"] = statistics.median(scrapes) * 1000
        if limit is not None:
            evicted = poll(lambda: logged(log, "cache_evicted"), bool, 600, "start-up eviction")
            figures["seconds_to_evicted"] = time.monotonic() - started
            assert evicted is not None
            figures["evicted_blobs"] = evicted["blobs"]
        if "index_rows_dropped" not in log.read_text(errors="replace"):  # else it checked before serving
            poll(lambda: logged(log, "cache_checked"), bool, 600, "integrity pass")
        figures["seconds_to_checked"] = time.monotonic() - started
        figures["rss_checked_mib"] = rss_mib(proc.pid)
        return figures
    finally:
        stop_process(proc)


def run(blobs: int, workdir: Path = WORKDIR, python: Path = Path(sys.executable)) -> dict[str, Any]:
    """Seed `blobs` (unless seeded before), then measure a start on a copy, and one with eviction."""
    seeded = workdir / f"seed-{blobs}"
    if not (seeded / "blobs").is_dir():
        shutil.rmtree(seeded, ignore_errors=True)
        started = time.monotonic()
        seed(seeded, blobs)
        print(f"seeded {blobs} blobs in {time.monotonic() - started:.1f} s", file=sys.stderr)
    report: dict[str, Any] = {"blobs": blobs}
    limits = (("start", None), ("evict", blobs * BLOB * 13 // 100)) if blobs else (("start", None),)
    for label, limit in limits:
        copy = workdir / "run"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(seeded, copy)
        os.sync()  # the copy's writeback must not compete with the start measured
        report[label] = measure(copy, workdir, limit, python.absolute())
    shutil.rmtree(workdir / "run", ignore_errors=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bigstore", description=__doc__)
    parser.add_argument("--blobs", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument(
        "--python", type=Path, default=Path(sys.executable), help="a checkout's .venv/bin/python to measure"
    )
    args = parser.parse_args()
    print(json.dumps(run(args.blobs, args.workdir, args.python), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
