"""The scenarios of issue 8 (and the herd of issue 3). Each runs mirror, reference and limit once, in an
order that rotates with the run number, and returns one sample: metric name -> value.

Keys: `mirror`, `reference`, `limit` hold the headline figure; `<who>_upstream_ratio` is upstream body
bytes over the bytes wanted; `<who>_upstream_per_request` upstream requests per client request;
`mirror_cpu_s` and `mirror_peak_rss_mib` the mirror's CPU seconds and peak RSS during its part.
"""

from __future__ import annotations

import shutil
import statistics

from tests.bench import floor
from tests.bench.load import BenchError, check_transfers, curl_get, curl_parallel, timed_pull, wrk
from tests.bench.procs import ProcStats, children_cpu_seconds
from tests.bench.stack import WHO, Env, Sample
from tests.support.skopeo import write_direct_registries_conf, write_registries_conf

GB = 1e9
GIB = 1024**3
REPEATS = 3  # transfers per target per run in the cached-blob scenarios


def rotate(run: int) -> tuple[str, ...]:
    """mirror, reference, limit, starting one further each run (interleaved, no fixed first place)."""
    shift = run % len(WHO)
    return WHO[shift:] + WHO[:shift]


def _cached_streams(env: Env, run: int, streams: int) -> Sample:
    sd = env.seeded
    sample: Sample = {}
    for who in rotate(run):
        target = env.warm(who, limit=env.nginx.url)
        url = f"{target.url}/big" if who == "limit" else target.blob_url(sd.big_name, sd.big_digest)
        rates = []
        with target.measure(sample):
            for _ in range(REPEATS):  # short transfers: the median of a few damps the noise
                wall, transfers = curl_parallel(url, streams)
                check_transfers(transfers, sd.big_size, f"{who} cached blob")
                rates.append(streams * sd.big_size / wall / GB)
        sample[who] = statistics.median(rates)
    return sample


def cached_one_stream(env: Env, run: int) -> Sample:
    """1. The cached big blob, one curl (median of `REPEATS`): bytes/s."""
    return _cached_streams(env, run, 1)


def cached_four_streams(env: Env, run: int) -> Sample:
    """2. The cached big blob, four curls at once (median of `REPEATS`): aggregate bytes/s."""
    return _cached_streams(env, run, 4)


def _rate(env: Env, run: int, path: str, headers: dict[str, str]) -> Sample:
    sample: Sample = {}
    for who in rotate(run):
        target = env.warm(who)
        url = target.url + path
        first = curl_get(url, headers)  # warm-up, outside the counted window
        if first.status != 200:
            raise BenchError(f"{who}: GET {path} answered {first.status}")
        mark = env.upstream_mark()
        with target.measure(sample):
            result = wrk(url, duration_s=env.duration_s, headers=headers)
        sample[who] = result.rps
        if who != "limit":
            seen = env.upstream.requests(mark)
            sample[f"{who}_upstream_requests"] = len(seen)
            sample[f"{who}_upstream_per_request"] = len(seen) / result.requests
            if who == "mirror" and seen:
                what = ", ".join(sorted({f"{r.method} {r.route} {r.status}" for r in seen})[:3])
                env.notes.append(
                    f"run {run + 1}: mirror sent {len(seen)} upstream requests during wrk {path}: {what}"
                )
    return sample


def manifest_by_tag(env: Env, run: int) -> Sample:
    """3. GET the tagged manifest with 64 connections for a few seconds (wrk): req/s, upstream requests."""
    sd = env.seeded
    return _rate(env, run, f"/v2/{sd.big_name}/manifests/{sd.big_tag}", {"Accept": sd.big_manifest_type})


def small_blob(env: Env, run: int) -> Sample:
    """4. GET the 369-byte blob with 64 connections (wrk): req/s."""
    sd = env.seeded
    return _rate(env, run, f"/v2/{sd.small_name}/blobs/{sd.small_digest}", {})


def pull(env: Env, run: int, prefix: str, upstream: str | None = None) -> Sample:
    """skopeo copies the 6-layer image through a fresh mirror / reference, or straight from `upstream`
    (default the upstream on loopback): seconds, and `<who>_upstream_ratio`, `<who>_upstream_requests`
    (and `<who>_link_connections` opened over the WAN link when it is the upstream); CPU seconds of the
    pull by process (`<who>_server_cpu_s`, `<who>_upstream_cpu_s`, `<who>_client_cpu_s`: skopeo) and
    `<who>_cores`, all three over the wall time: how busy the two cores were."""
    sd = env.seeded
    sample: Sample = {}
    registry = ProcStats(env.upstream.pid)
    for who in rotate(run):
        label = f"{prefix}-{run}-{who}"
        scratch = env.workdir / label
        scratch.mkdir(parents=True, exist_ok=True)
        with env.cold(who, label, upstream) as target:
            conf = scratch / "registries.conf"
            if who == "limit":
                write_direct_registries_conf(conf, target.host)
            else:
                write_registries_conf(conf, target.host)
            mark, links = env.upstream_mark(), env.wan.stats.connections
            server = ProcStats(target.pid) if target.pid is not None else None
            cpu = (server.cpu_seconds() if server else 0.0, registry.cpu_seconds(), children_cpu_seconds())
            with target.measure(sample):
                sample[who] = timed_pull(f"docker.io/{sd.layers_name}:{sd.layers_tag}", conf, scratch)
                spent = (
                    server.cpu_seconds() - cpu[0] if server else 0.0,
                    registry.cpu_seconds() - cpu[1],
                    children_cpu_seconds() - cpu[2],  # skopeo, the one child
                )
                target.settle(sd.layers_blobs)
            requests, fetched = env.upstream_window(mark)
        sample[f"{who}_server_cpu_s"], sample[f"{who}_upstream_cpu_s"], sample[f"{who}_client_cpu_s"] = spent
        sample[f"{who}_cores"] = sum(spent) / sample[who]
        sample[f"{who}_upstream_ratio"] = fetched / sd.layers_image_bytes
        sample[f"{who}_upstream_requests"] = requests
        if upstream == env.wan.url:
            sample[f"{who}_link_connections"] = env.wan.stats.connections - links
        shutil.rmtree(scratch, ignore_errors=True)
    return sample


def cold_pull(env: Env, run: int) -> Sample:
    """5. skopeo copies the 6-layer image through a fresh mirror / reference, or straight from upstream."""
    return pull(env, run, "pull")


def herd(env: Env, run: int) -> Sample:
    """6. `env.herd` curls at once for the cold big blob: wall time for all, upstream bytes / blob."""
    sd = env.seeded
    sample: Sample = {}
    for who in rotate(run):
        with env.cold(who, f"herd-{run}-{who}") as target:
            mark = env.upstream_mark()
            with target.measure(sample):
                wall, transfers = curl_parallel(target.blob_url(sd.big_name, sd.big_digest), env.herd)
                check_transfers(transfers, sd.big_size, f"{who} herd")
                target.settle([sd.big_digest])
            _, fetched = env.upstream_window(mark)
        sample[who] = wall
        sample[f"{who}_upstream_ratio"] = fetched / sd.big_size
    return sample


def cold_ttfb(env: Env, run: int) -> Sample:
    """7. One curl of the cold big blob: time to first byte (ms), throughput (`<who>_gbps`), and CPU
    seconds per GiB of the server (`<who>_cpu_s`; the upstream's own for the limit), of the upstream
    feeding it and of curl."""
    sd = env.seeded
    sample: Sample = {}
    upstream = ProcStats(env.upstream.pid)
    for who in rotate(run):
        with env.cold(who, f"ttfb-{run}-{who}") as target:
            mark = env.upstream_mark()
            server = ProcStats(target.pid) if target.pid is not None else upstream
            cpu = (server.cpu_seconds(), upstream.cpu_seconds(), children_cpu_seconds())
            with target.measure(sample):
                transfer = curl_get(target.blob_url(sd.big_name, sd.big_digest))
                check_transfers([transfer], sd.big_size, f"{who} cold blob")
                target.settle([sd.big_digest])
            per_gib = GIB / sd.big_size
            sample[f"{who}_cpu_s"] = (server.cpu_seconds() - cpu[0]) * per_gib
            sample[f"{who}_upstream_cpu_s"] = (upstream.cpu_seconds() - cpu[1]) * per_gib
            sample[f"{who}_client_cpu_s"] = (children_cpu_seconds() - cpu[2]) * per_gib  # curl, the one child
            _, fetched = env.upstream_window(mark)
        sample[who] = transfer.ttfb * 1000
        sample[f"{who}_gbps"] = sd.big_size / transfer.total / GB
        sample[f"{who}_upstream_ratio"] = fetched / sd.big_size
    sample.update(floor_sample(env, sample.get("mirror_cpu_s")))
    return sample


def floor_sample(env: Env, mirror_cpu_s: float | None) -> Sample:
    """Scenario 7's floor, taken right after its targets: the cold big blob through one thread that
    only receives, writes, hashes and sends it (`floor_*` keys, per GiB), SHA-256 and the page-cache
    write alone, and the mirror's CPU over the floor's."""
    sd = env.seeded
    path = f"/v2/{sd.big_name}/blobs/{sd.big_digest}"
    bare = floor.pipeline(env.upstream.port, env.upstream.pid, path, sd.big_size, env.workdir / "floor")
    sample: Sample = {
        "floor_cpu_s": bare.cpu_s,
        "floor_upstream_cpu_s": bare.upstream_cpu_s,
        "floor_client_cpu_s": bare.client_cpu_s,
        "floor_total_cpu_s": bare.cpu_s + bare.upstream_cpu_s + bare.client_cpu_s,
        "floor_sha256_cpu_s": floor.sha256_cpu_s(sd.big_size),
        "floor_write_cpu_s": floor.write_cpu_s(sd.big_size, env.workdir / "floor"),
        "floor_write_1m_cpu_s": floor.write_cpu_s(sd.big_size, env.workdir / "floor", 1024 * 1024),
    }
    if mirror_cpu_s is not None and bare.cpu_s > 0:
        sample["mirror_over_floor"] = mirror_cpu_s / bare.cpu_s
    return sample
