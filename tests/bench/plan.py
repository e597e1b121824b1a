"""Every scenario of `make bench`, numbered as in the report; `once` ones run in the first run only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.bench.scenarios import (
    cached_four_streams,
    cached_one_stream,
    cold_pull,
    cold_ttfb,
    herd,
    manifest_by_tag,
    small_blob,
)
from tests.bench.soak import soak
from tests.bench.stack import Env, Sample
from tests.bench.store_scenario import big_store
from tests.bench.wan_scenarios import wan_cold_pull, wan_herd


@dataclass(frozen=True)
class Scenario:
    number: int
    key: str
    title: str
    run: Callable[[Env, int], Sample]
    once: bool = False  # long or without a reference to interleave with: one run is enough


SCENARIOS = (
    Scenario(1, "cached_1", "cached big blob, 1 stream", cached_one_stream),
    Scenario(2, "cached_4", "cached big blob, 4 streams", cached_four_streams),
    Scenario(3, "manifest", "manifest GET by tag, 64 connections", manifest_by_tag),
    Scenario(4, "small_blob", "small blob GET (369 B), 64 connections", small_blob),
    Scenario(5, "cold_pull", "cold pull of the 6-layer image (skopeo)", cold_pull),
    Scenario(6, "herd", "herd: concurrent clients of the cold big blob", herd),
    Scenario(7, "cold_ttfb", "cold big blob: TTFB and throughput", cold_ttfb),
    Scenario(8, "wan_pull", "WAN upstream: cold pull of the 6-layer image (skopeo)", wan_cold_pull),
    Scenario(9, "wan_herd", "WAN upstream: herd of the cold big blob vs one download", wan_herd),
    Scenario(10, "soak", "soak: mixed traffic on many connections", soak, once=True),
    Scenario(11, "bigstore", "start-up on a store of many blobs", big_store, once=True),
)
