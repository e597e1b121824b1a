"""Scenario 11 (issue 17, item 4): the mirror's start on a store of many small blobs against its start on an
empty store, with `bigstore.py` (one run: the seed of a million blobs takes minutes to build, once)."""

from __future__ import annotations

from typing import Any

from tests.bench.bigstore import run as run_bigstore
from tests.bench.stack import Env, Sample


def _start_figures(who: str, start: dict[str, Any]) -> Sample:
    return {
        f"{who}_ready_s": start["seconds_to_ready"],
        f"{who}_rss_ready_mib": start["rss_ready_mib"]["rss"],
        f"{who}_heap_ready_mib": start["rss_ready_mib"]["anon"],
        f"{who}_scrape_ms": start["scrape_ms"],
        f"{who}_checked_s": start["seconds_to_checked"],
        f"{who}_rss_checked_mib": start["rss_checked_mib"]["rss"],
    }


def big_store(env: Env, run: int) -> Sample:
    """11. `env.bigstore_blobs` blobs as `mirror_*`, the empty store as `limit_*`; eviction of 87 %."""
    empty, full = run_bigstore(0), run_bigstore(env.bigstore_blobs)
    sample = _start_figures("limit", empty["start"]) | _start_figures("mirror", full["start"])
    sample["mirror"], sample["limit"] = sample["mirror_ready_s"], sample["limit_ready_s"]
    evict = full["evict"]
    sample["mirror_evict_ready_s"] = evict["seconds_to_ready"]
    sample["mirror_evicted_s"] = evict["seconds_to_evicted"]
    sample["mirror_eviction_rate"] = evict["evicted_blobs"] / evict["seconds_to_evicted"]
    return sample
