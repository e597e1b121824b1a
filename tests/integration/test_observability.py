"""Metrics and logs after real pulls through the mirror: the counters move as they should."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]


async def samples(mirror: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = await (await mirror.get("/metrics")).text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


async def pull_image(mirror: Client, blobs: list[str]) -> int:
    """Pull the manifest and blobs like a client; the body bytes received."""
    received = len(await (await mirror.get("/v2/library/app/manifests/1")).read())
    for digest in blobs:
        received += len(await (await mirror.get(f"/v2/library/app/blobs/{digest}")).read())
        await eventually(lambda d=digest: stored(mirror, d))  # type: ignore[misc]
    return received


async def test_cold_then_warm_pull_moves_misses_hits_and_bytes(fake: FakeUpstream, mirror: Client) -> None:
    """Cold pull: misses and upstream bytes; warm pull: hits and cache bytes; bytes add up to what the
    client received."""
    blobs = [fake.add_blob(b"layer-one" * 1000), fake.add_blob(b"layer-two" * 3000)]
    fake.add_manifest("library/app", "1", blobs)
    cold = await pull_image(mirror, blobs)
    found = await samples(mirror)
    assert total(found, "mirror_requests_total", result="miss") == 3
    assert total(found, "mirror_requests_total", result="hit") == 0
    assert total(found, "mirror_bytes_served_total", source="upstream") == cold
    assert total(found, "mirror_upstream_bytes_received_total") == sum(len(fake.blobs[b]) for b in blobs)
    warm = await pull_image(mirror, blobs)
    found = await samples(mirror)
    assert total(found, "mirror_requests_total", result="hit") == 3
    assert total(found, "mirror_bytes_served_total", source="cache") == warm
    assert total(found, "mirror_bytes_served_total") == cold + warm
    assert total(found, "mirror_request_duration_seconds_count", kind="blob") == 4
    assert total(found, "mirror_time_to_first_byte_seconds_count", kind="manifest") == 2
    assert total(found, "mirror_upstream_requests_total", endpoint="blob", status="200") == 2


async def test_one_log_line_per_request_with_request_id(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """Each request logs one `request` event carrying its id, result and bytes; no secret appears."""
    mirror = await make_mirror(upstream_username="u", upstream_password="hunter2-secret")
    digest = fake.add_blob(b"x" * 100)
    with capture_logs() as logs:
        await (await mirror.get(f"/v2/library/x/blobs/{digest}", headers={"X-Request-Id": "req-1"})).read()
        await mirror.get("/v2/")
    lines = [e for e in logs if e["event"] == "request"]
    assert [e["path"] for e in lines] == [f"/v2/library/x/blobs/{digest}", "/v2/"]
    assert lines[0]["request_id"] == "req-1"
    assert (lines[0]["result"], lines[0]["bytes"], lines[0]["status"]) == ("miss", 100, 200)
    assert "hunter2-secret" not in repr(logs)
