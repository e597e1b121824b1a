"""The WAN scenarios (issue 17, item 5): the cold pull and the herd with the upstream behind the shaped
link of `wan.py`, for the mirror and the reference as their upstream, and for the same clients straight."""

from __future__ import annotations

from tests.bench.load import check_transfers, curl_parallel
from tests.bench.scenarios import pull
from tests.bench.stack import Env, Sample

HERD_WHO = ("mirror", "limit")  # the reference fetches once per client: 17 x the blob over the link


def wan_cold_pull(env: Env, run: int) -> Sample:
    """8. Scenario 5's cold pull, the upstream reached over the WAN link by mirror, reference and skopeo."""
    return pull(env, run, "wan-pull", env.wan.url)


def wan_herd(env: Env, run: int) -> Sample:
    """9. `env.herd` curls of the cold big blob through a fresh mirror over the link, against one curl
    straight over it: wall seconds, the first client's, the mirror's upstream download's (`_fill_s`),
    upstream bytes / blob, connections over the link."""
    sd = env.seeded
    sample: Sample = {}
    for who in HERD_WHO[run % 2 :] + HERD_WHO[: run % 2]:
        with env.cold(who, f"wan-herd-{run}-{who}", env.wan.url) as target:
            clients = env.herd if who == "mirror" else 1
            mark, links = env.upstream_mark(), env.wan.stats.connections
            with target.measure(sample):
                wall, transfers = curl_parallel(target.blob_url(sd.big_name, sd.big_digest), clients)
                check_transfers(transfers, sd.big_size, f"{who} WAN herd")
                target.settle([sd.big_digest])
                fill_s = target.fill_seconds(sd.big_digest)
            _, fetched = env.upstream_window(mark)
        sample[who] = wall
        sample[f"{who}_first_done_s"] = min(t.total for t in transfers)
        if fill_s is not None:
            sample[f"{who}_fill_s"] = fill_s
        sample[f"{who}_upstream_ratio"] = fetched / sd.big_size
        sample[f"{who}_link_connections"] = env.wan.stats.connections - links
    return sample
