"""A real Prometheus scrapes a real mirror (`python -m mirror serve`) in front of a real docker-registry,
loads mirror-alerts.yml, and computes the hit ratios of a cold pull followed by a warm one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.observability.promserver import RULES, PrometheusServer
from tests.support.catalog import SPECS, seed_image
from tests.support.images import ACCEPT_ALL, ImageInfo
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.polling import poll, wait_until
from tests.support.registry import start_registry

pytestmark = pytest.mark.e2e

DEADLINE_S = 15.0
# The README's ratios on whole-life counters: exact at any instant, unlike rate() over a window.
BYTE_RATIO = 'sum(mirror_bytes_served_total{source="cache"}) / sum(mirror_bytes_served_total)'
REQUEST_RATIO = (
    'sum(mirror_requests_total{kind=~"manifest|blob",result=~"hit|revalidated|stale"})'
    ' / sum(mirror_requests_total{kind=~"manifest|blob",result!="error"})'
)
EXPECTED_ALERTS = {
    "MirrorHitRatioCollapsed",
    "MirrorUpstreamDown",
    "MirrorRedisUnreachable",
    "MirrorRateLimitBudgetLow",
    "MirrorCacheNearLimitHighEviction",
    "MirrorBlobsNotStored",
    "MirrorFillFailures",
    "MirrorServerErrors",
}
EXPECTED_RECORDS = {"mirror:cache_hit_ratio:rate5m", "mirror:cache_byte_hit_ratio:rate5m"}


@dataclass(frozen=True)
class Stack:
    """The running mirror and Prometheus, and the bytes the pulls sent from each source."""

    mirror: MirrorProcess
    prometheus: PrometheusServer
    image: ImageInfo
    bytes_per_source: int  # the manifest and every blob once: cold from upstream, warm from cache


def get_manifest(mirror: MirrorProcess, image: ImageInfo) -> None:
    resp = raw_request(
        "GET",
        f"{mirror.url}/v2/{image.name}/manifests/{image.manifest_digest}",
        headers={"Accept": ACCEPT_ALL},
    )
    assert resp.status == 200, resp.body[:300]
    assert resp.body == image.manifest


def get_blobs(mirror: MirrorProcess, image: ImageInfo) -> None:
    for blob in (image.config, *image.layers):
        resp = raw_request("GET", f"{mirror.url}/v2/{image.name}/blobs/{blob.digest}")
        assert resp.status == 200, resp.body[:300]
        assert len(resp.body) == blob.size


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Upstream registry, mirror and Prometheus, after the manifest then the blobs were pulled cold and warm.

    The manifest is pulled (cold, then warm) before Prometheus starts, so both mirror_bytes_served_total
    series exist, with equal values, from the first scrape on: `rate()` then sees the blob bytes of both
    sources over the same samples, and the recording rule's ratio is exact.
    """
    workdir: Path = tmp_path_factory.mktemp("scrape")
    registry = start_registry(workdir / "upstream")
    mirror = MirrorProcess(workdir / "mirror", registry.url)
    prometheus = PrometheusServer(workdir / "prometheus", [mirror.host], [RULES])
    try:
        image = seed_image(registry, SPECS["v2img"], workdir / "seed")
        mirror.start()
        get_manifest(mirror, image)
        get_manifest(mirror, image)
        prometheus.start()
        manifest_bytes = 2 * image.manifest_size
        poll(
            lambda: prometheus.value("sum(mirror_bytes_served_total)"),
            lambda total: total == manifest_bytes,
            DEADLINE_S,
            "first scrape of the manifest bytes",
        )
        get_blobs(mirror, image)
        # A response ends with its last byte, the fill commits just after: warm means committed.
        wait_until(lambda: mirror.metric("mirror_fills_in_flight") == 0, DEADLINE_S, "cold fills committed")
        get_blobs(mirror, image)
        blob_bytes = image.config.size + sum(layer.size for layer in image.layers)
        yield Stack(mirror, prometheus, image, image.manifest_size + blob_bytes)
    finally:
        prometheus.stop()
        mirror.stop()
        registry.stop()


def test_mirror_counts_each_pulled_byte_once_per_source(stack: Stack) -> None:
    """The mirror's own /metrics: the cold pull's bytes came from upstream, the warm pull's from the cache."""
    for source in ("upstream", "cache"):
        served = stack.mirror.metric("mirror_bytes_served_total", source=source)
        assert served == stack.bytes_per_source, source


def test_prometheus_computes_a_byte_hit_ratio_of_one_half(stack: Stack) -> None:
    """Once Prometheus has scraped both pulls, cache bytes / all bytes is exactly 0.5."""
    total = 2 * stack.bytes_per_source
    poll(
        lambda: stack.prometheus.value("sum(mirror_bytes_served_total)"),
        lambda value: value == total,
        DEADLINE_S,
        f"a scrape with all {total} bytes",
    )
    assert stack.prometheus.value(BYTE_RATIO) == 0.5


def test_recording_rule_evaluates_the_byte_hit_ratio_to_one_half(stack: Stack) -> None:
    """mirror:cache_byte_hit_ratio:rate5m, evaluated by Prometheus from the rule file, reaches 0.5."""
    poll(
        lambda: stack.prometheus.value("mirror:cache_byte_hit_ratio:rate5m"),
        lambda value: value == 0.5,
        DEADLINE_S,
        "mirror:cache_byte_hit_ratio:rate5m == 0.5",
    )


def test_request_hit_ratio_counts_the_warm_pull_as_hits(stack: Stack) -> None:
    """The recording rule's request selectors find the warm pull's hits: half of all pull requests."""
    requests = 2 * (1 + len(stack.image.blobs))
    poll(
        lambda: stack.prometheus.value('sum(mirror_requests_total{kind=~"manifest|blob"})'),
        lambda value: value == requests,
        DEADLINE_S,
        f"a scrape with all {requests} requests",
    )
    assert stack.prometheus.value(REQUEST_RATIO) == 0.5


def test_prometheus_loads_every_rule_healthy_with_a_runbook(stack: Stack) -> None:
    """Prometheus loads all alerts and recording rules, evaluates them without error, and every alert
    carries a summary, a description and a runbook."""

    def rules() -> list[dict[str, Any]]:
        groups = stack.prometheus.api("/api/v1/rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def all_evaluated(found: list[dict[str, Any]]) -> bool:
        never = "0001-01-01"  # Go's zero time: not evaluated yet
        names = {rule["name"] for rule in found}
        return names == EXPECTED_ALERTS | EXPECTED_RECORDS and not any(
            rule["lastEvaluation"].startswith(never) for rule in found
        )

    loaded = poll(rules, all_evaluated, DEADLINE_S, "every rule loaded and evaluated")
    assert [(rule["name"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"] == []
    for rule in loaded:
        if rule["type"] == "alerting":
            annotations = rule["annotations"]
            assert {"summary", "description", "runbook"} <= annotations.keys(), rule["name"]
            assert "Check:" in annotations["runbook"], rule["name"]
            assert "Act:" in annotations["runbook"], rule["name"]
