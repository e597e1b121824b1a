"""The herd: many clients of one cold blob at once, against the real upstream."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.catalog import MIB, ImageSpec, seed_image
from tests.support.digests import sha256
from tests.support.images import LayerSpec
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry

CLIENTS = 16


def test_sixteen_clients_of_a_cold_blob_cause_one_upstream_get(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    """16 concurrent GETs of a cold 32 MiB layer all get its exact bytes; the upstream sees one GET."""
    registry = make_registry()
    image = seed_image(
        registry, ImageSpec("library/herd", "1", (LayerSpec(32 * MIB, seed=42),), "oci"), tmp_path
    )
    layer = image.layers[0]
    with MirrorProcess(tmp_path / "mirror", registry.url) as mirror:
        mark = registry.mark()
        url = f"{mirror.url}/v2/library/herd/blobs/{layer.digest}"
        with ThreadPoolExecutor(CLIENTS) as pool:
            bodies = list(pool.map(lambda _: raw_request("GET", url, timeout=60).body, range(CLIENTS)))
        assert {sha256(b) for b in bodies} == {layer.digest}
        gets = [r for r in registry.blob_gets(mark) if r.route.endswith(layer.digest)]
        assert len(gets) == 1
        assert mirror.metric("mirror_upstream_bytes_received_total") == layer.size
        assert mirror.metric("mirror_requests_total", kind="blob", result="miss") == 1
        assert mirror.metric("mirror_requests_total", kind="blob", status="200") == CLIENTS
