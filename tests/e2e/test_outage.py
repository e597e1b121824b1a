"""A real upstream going down and coming back, under real pulls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.catalog import SPECS, Catalog, seed_image
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.polling import wait_until
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf

FAILURES = 2


def test_cached_image_survives_upstream_outage_and_recovery(
    catalog: Catalog, upstream: Registry, make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    """Warm, stop the upstream: pulls still succeed from cache and the breaker keeps connection attempts
    to its threshold; restart it with the tag moved: the breaker closes and the new digest is served."""
    registry = make_registry(seed_from=upstream.root)
    env = {"MIRROR_TAG_TTL": "0", "MIRROR_BREAKER_FAILURES": str(FAILURES), "MIRROR_BREAKER_COOLDOWN": "3"}
    with MirrorProcess(tmp_path / "mirror", registry.url, env=env) as mirror:
        conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)

        def pull(dest: str) -> set[str]:
            skopeo_copy(
                "docker.io/library/v2img:latest",
                tmp_path / dest,
                registries_conf=conf,
                tmpdir=tmp_path / "skopeo",
                format="dir",
            )
            return layout_digests(tmp_path / dest)

        assert catalog.v2img.blobs <= pull("warm")
        registry.stop()
        for attempt in range(3):
            assert catalog.v2img.blobs <= pull(f"down-{attempt}")
        attempts = mirror.metric("mirror_upstream_requests_total", status="error")
        assert 1 <= attempts <= FAILURES + 1
        assert mirror.metric("mirror_requests_total", kind="manifest", result="stale") >= 3
        registry.start()
        moved = seed_image(registry, SPECS["ociimg"], tmp_path / "seed", name="library/v2img")
        url = f"{mirror.url}/v2/library/v2img/manifests/latest"
        accept = {"Accept": f"{moved.manifest_media_type}, {catalog.v2img.manifest_media_type}"}
        wait_until(
            lambda: (
                raw_request("GET", url, headers=accept).headers.get("docker-content-digest")
                == moved.manifest_digest
            ),
            deadline_s=20,
            what="the moved tag to be served",
        )
        assert mirror.metric("mirror_upstream_breaker_state") == 0
        assert moved.blobs <= pull("recovered")
