"""Scenario 10, the soak (issue 17, item 6): `env.soak.connections` concurrent keep-alive connections of
mixed manifest, cached-blob and cold-blob GETs against one fresh mirror for a warm-up and then the soak's
duration, every body hashed (`soakload.py`, in `env.soak.processes` processes). Reports answers by
status, wrong bodies, p50/p99 per kind after the warm-up, and the mirror's RSS after the warm-up and at
the end.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.load import BenchError
from tests.bench.procs import ProcStats
from tests.bench.soakload import KINDS
from tests.bench.soakseed import SOAK_NAME, SoakBlobs, ensure_soak_blobs
from tests.bench.stack import MIB, Env, Sample
from tests.support.digests import sha256
from tests.support.net import raw_request

CACHED_BLOBS = 256  # warmed before the load
COLD_BLOBS = 40_000  # more than a minute of cold requests at this machine's rate; then they turn cached
WEIGHTS = {"manifest": 0.35, "cached": 0.5, "cold": 0.15}
SAMPLE_EVERY_S = 1.0  # RSS and open connections sampled this often during the load


def _manifests(env: Env) -> list[list[str]]:
    """[path, accept, digest] of each manifest the soak asks for: by tag and by digest, both images."""
    sd, found = env.seeded, []
    v2s2 = "application/vnd.docker.distribution.manifest.v2+json"
    for name, tag, accept in (
        (sd.big_name, sd.big_tag, sd.big_manifest_type),
        (sd.layers_name, sd.layers_tag, v2s2),
    ):
        resp = raw_request("GET", f"{env.upstream.url}/v2/{name}/manifests/{tag}", headers={"Accept": accept})
        if resp.status != 200:
            raise BenchError(f"upstream manifest {name}:{tag} answered {resp.status}")
        digest = sha256(resp.body)
        found += [
            [f"/v2/{name}/manifests/{tag}", accept, digest],
            [f"/v2/{name}/manifests/{digest}", accept, digest],
        ]
    return found


@dataclass
class Driven:
    """What `_drive` saw: the load processes' outputs and the mirror's RSS (bytes) and open connections."""

    outputs: list[dict[str, Any]] = field(default_factory=list)
    rss_warm: int | None = None
    cpu_warm: float = 0.0  # the mirror's CPU seconds when the warm-up ended
    cpu_end: float = 0.0
    rss_end: int = 0
    rss_peak: int = 0
    connections: float = 0.0


def _percentiles(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def _merge(outputs: list[dict[str, Any]], sample: Sample, seconds: float) -> list[str]:
    """Fold the load processes' tallies into `sample`; returns notes on what failed."""
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {k: [] for k in KINDS}
    for out in outputs:
        statuses.update({int(k): v for k, v in out["statuses"].items()})
        failures.update(out["failures"])
        for kind in KINDS:
            latencies[kind] += out["latencies"][kind]
    sample["mirror"] = sum(len(v) for v in latencies.values()) / seconds
    sample["mirror_5xx"] = sum(v for k, v in statuses.items() if k >= 500)
    sample["mirror_failed"] = sum(failures.values())
    sample["mirror_wrong_bytes"] = sum(out["wrong_bytes"] for out in outputs)
    sample["mirror_cold_requests"] = sum(out["cold_done"] for out in outputs)
    sample["mirror_requests"] = sum(statuses.values())
    for kind, values in latencies.items():
        if (cuts := _percentiles(values)) is not None:
            sample[f"mirror_{kind}_p50_ms"], sample[f"mirror_{kind}_p99_ms"] = cuts
    return [f"soak: {count} x {what}" for what, count in failures.most_common(5)]


def _warm(url: str, blobs: SoakBlobs) -> None:
    """GET every blob of the cached set once through the mirror, bodies checked."""
    for digest in blobs.cached:
        resp = raw_request("GET", f"{url}/v2/{SOAK_NAME}/blobs/{digest}", timeout=60)
        if resp.status != 200 or sha256(resp.body) != digest:
            raise BenchError(f"warming the soak's blob {digest} answered {resp.status}")


def _plans(env: Env, port: int, blobs: SoakBlobs, workdir: Path) -> list[Path]:
    """One plan file per load process: the connections and the cold blobs split between them."""
    soak, paths = env.soak, []
    cached = [[f"/v2/{SOAK_NAME}/blobs/{d}", d] for d in blobs.cached]
    cached.append([f"/v2/{env.seeded.small_name}/blobs/{env.seeded.small_digest}", env.seeded.small_digest])
    manifests = _manifests(env)
    for n in range(soak.processes):
        plan = {
            "ip": "127.0.0.1",
            "port": port,
            "host": f"127.0.0.1:{port}",
            "connections": soak.connections // soak.processes,
            "warmup_s": soak.warmup_s,
            "duration_s": soak.duration_s,
            "weights": WEIGHTS,
            "seed": n,
            "manifests": manifests,
            "cached": cached,
            "cold": [[f"/v2/{SOAK_NAME}/blobs/{d}", d] for d in blobs.cold[n :: soak.processes]],
        }
        path = workdir / f"soak-plan-{n}.json"
        path.write_text(json.dumps(plan))
        paths.append(path)
    return paths


def _drive(plans: list[Path], warmup_s: float, stats: ProcStats, gauge: Callable[[], float]) -> Driven:
    """Run the load processes to their end, sampling the mirror's RSS and open connections meanwhile."""
    results = [p.with_suffix(".out.json") for p in plans]
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.bench.soakload", str(p), str(r)])
        for p, r in zip(plans, results, strict=True)
    ]
    driven = Driven()
    started = time.monotonic()
    try:
        while all(p.poll() is None for p in procs):
            rss = stats.rss()
            if time.monotonic() - started >= warmup_s and driven.rss_warm is None:
                driven.rss_warm, driven.cpu_warm = rss, stats.cpu_seconds()
            if driven.rss_warm is not None:
                driven.rss_end, driven.cpu_end = rss, stats.cpu_seconds()
            driven.rss_peak = max(driven.rss_peak, rss)
            driven.connections = max(driven.connections, gauge())
            time.sleep(SAMPLE_EVERY_S)  # the sampling period, not a wait for a state
        for proc in procs:
            proc.wait(timeout=600)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    bad = [p.returncode for p in procs if p.returncode != 0]
    if bad or driven.rss_warm is None:
        raise BenchError(f"soak load processes exited with {bad} (RSS after warm-up: {driven.rss_warm})")
    driven.outputs = [json.loads(r.read_text()) for r in results]
    return driven


def soak(env: Env, run: int) -> Sample:
    """10. The soak: figures named `mirror_*` (see `_merge`), the mirror's RSS and open connections."""
    blobs = ensure_soak_blobs(env.storage, CACHED_BLOBS, COLD_BLOBS)
    sample: Sample = {}
    with env.fresh_mirror(f"soak-{run}") as mirror:
        assert mirror.proc is not None
        _warm(mirror.url, blobs)
        plans = _plans(env, mirror.port, blobs, mirror.workdir)
        stats = ProcStats(mirror.proc.pid)
        driven = _drive(plans, env.soak.warmup_s, stats, lambda: mirror.metric("mirror_connections"))
        abandoned = mirror.metric("mirror_fill_failures_total", reason="abandoned")
    assert driven.rss_warm is not None
    sample["mirror_rss_warm_mib"] = driven.rss_warm / MIB
    sample["mirror_rss_end_mib"] = driven.rss_end / MIB
    sample["mirror_peak_rss_mib"] = driven.rss_peak / MIB
    sample["mirror_rss_growth"] = driven.rss_end / driven.rss_warm
    sample["mirror_connections_open"] = driven.connections
    sample["mirror_fills_abandoned"] = abandoned
    sample["mirror_cpu_s"] = driven.cpu_end - driven.cpu_warm
    sample["mirror_cores"] = sample["mirror_cpu_s"] / env.soak.duration_s
    sample["load_cores"] = sum(out["cpu_s"] for out in driven.outputs) / (
        env.soak.duration_s + env.soak.warmup_s
    )
    env.notes += _merge(driven.outputs, sample, env.soak.duration_s)
    return sample
