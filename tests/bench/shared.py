"""`python -m tests.bench.shared`: the shared mode's scenario (issue 18); `make bench` runs it once after
the main scenarios and writes `bench-results/shared.json`.

Three (`--replicas`) mirrors on one real Redis, each with an empty cache, and `--clients` concurrent curls
of the cold big blob (1 GiB by default, the seed of `make bench`) spread over them round-robin; then the
same clients straight from the upstream. Reports, per run: wall time until every client is done (and the
ratio to the upstream's), upstream body bytes over the blob size (target 1.00), peak RSS per replica,
where the replicas' fills got their bytes, and Redis commands per client request for those misses and
for a second round that hits every replica's cache (target 0). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mirror.config import Settings
from tests.bench.load import _curl_args, _parse_curl, check_transfers
from tests.bench.procs import ProcStats
from tests.bench.seed import ensure_seeded
from tests.support.cluster import SharedMirrors
from tests.support.redis import RedisServer
from tests.support.registry import Registry

CURL_MAX_S = 300
#: Redis commands the bench's own client sends (not the mirrors').
OWN_COMMANDS = ("info", "config|resetstat", "hello")
#: The replicas run the production Redis timeout, not the tests' patient one.
DEFAULTS = {"MIRROR_REDIS_TIMEOUT": str(Settings().redis_timeout)}


def curls(urls: list[str]) -> tuple[float, list[object]]:
    """One curl per URL, all at once: (wall seconds until the last is done, transfers)."""
    start = time.monotonic()
    procs = [
        subprocess.Popen(_curl_args(u, None), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for u in urls
    ]
    try:
        outputs = [p.communicate(timeout=CURL_MAX_S) for p in procs]
        wall = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return wall, [_parse_curl(out, err, url) for (out, err), url in zip(outputs, urls, strict=True)]


def mirror_commands(redis: RedisServer) -> int:
    return sum(v for k, v in redis.command_calls().items() if k not in OWN_COMMANDS)


def one_run(
    workdir: Path, upstream: Registry, big: tuple[str, str, int], replicas: int, clients: int
) -> dict[str, object]:
    name, digest, size = big
    path = f"/v2/{name}/blobs/{digest}"
    figures: dict[str, object] = {}
    with (
        RedisServer(workdir / "redis") as redis,
        SharedMirrors(workdir / "mirrors", upstream.url, redis.url, count=replicas, env=DEFAULTS) as mirrors,
    ):
        stats = [ProcStats(m.proc.pid) for m in mirrors if m.proc is not None]
        redis.reset_stats()
        mark = upstream.mark()
        wall, transfers = curls([mirrors[i % replicas].url + path for i in range(clients)])
        check_transfers(transfers, size, "shared herd")  # type: ignore[arg-type]
        fetched = sum(r.size or 0 for r in upstream.blob_gets(mark) if r.status in (200, 206))
        figures["wall_s"] = round(wall, 3)
        figures["upstream_ratio"] = round(fetched / size, 4)
        figures["peak_rss_mib"] = [round(s.peak_rss() / 2**20, 1) for s in stats]
        figures["fill_sources"] = {
            src: mirrors.metric("mirror_cluster_fills_total", source=src)
            for src in ("upstream", "filling", "held")
        }
        time.sleep(2)  # the registrar's batch (1 s) and the lease releases land: counted with the misses
        figures["redis_commands_per_miss_request"] = round(mirror_commands(redis) / clients, 2)
        redis.reset_stats()
        curls([mirrors[i % replicas].url + path for i in range(clients)])  # every replica holds it now
        figures["redis_commands_per_hit_request"] = round(mirror_commands(redis) / clients, 2)
    direct_wall, transfers = curls([upstream.url + path] * clients)
    check_transfers(transfers, size, "straight from upstream")  # type: ignore[arg-type]
    figures["upstream_wall_s"] = round(direct_wall, 3)
    figures["wall_vs_upstream"] = round(wall / direct_wall, 3)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.shared", description=__doc__)
    parser.add_argument("--big-size", type=int, default=1024**3)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=Path(__file__).parents[2] / "bench-results" / "shared"
    )
    args = parser.parse_args()
    seeded, storage = ensure_seeded(args.big_size)
    report: dict[str, object] = {
        "big_size": args.big_size,
        "replicas": args.replicas,
        "clients": args.clients,
    }
    with contextlib.ExitStack() as stack:
        upstream = Registry(args.workdir / "upstream")
        upstream.root = storage  # read-only use of the cached seed
        stack.callback(upstream.stop)
        upstream.start()
        runs = []
        for run in range(args.runs):
            workdir = args.workdir / f"run-{run}"
            shutil.rmtree(workdir, ignore_errors=True)
            big = (seeded.big_name, seeded.big_digest, seeded.big_size)
            runs.append(one_run(workdir, upstream, big, args.replicas, args.clients))
            shutil.rmtree(workdir, ignore_errors=True)
        report["runs"] = runs
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
