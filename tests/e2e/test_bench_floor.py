"""The bench's floor (tests/bench/floor.py): the per-byte work of a cold blob without the mirror, against
the real registry and a real curl. Only that it moves the whole blob and measures something; the
figures themselves are the bench's to report."""

from __future__ import annotations

from pathlib import Path

from tests.bench import floor
from tests.support.catalog import Catalog
from tests.support.registry import Registry


def test_the_pipeline_moves_a_whole_blob_from_the_registry_to_curl(
    upstream: Registry, catalog: Catalog, tmp_path: Path
) -> None:
    """One thread passes the 8 MiB layer to curl whole, leaves no file behind and reports its CPU."""
    layer = catalog.big.layers[0]
    path = f"/v2/{catalog.big.name}/blobs/{layer.digest}"
    measured = floor.pipeline(upstream.port, upstream.pid, path, layer.size, tmp_path / "floor")
    assert measured.cpu_s > 0
    assert measured.gbps > 0
    assert list((tmp_path / "floor").iterdir()) == []


def test_the_parts_alone_report_cpu_and_leave_no_file(tmp_path: Path) -> None:
    """SHA-256 and the page-cache write of 8 MiB each report CPU seconds per GiB; the file is gone."""
    assert floor.sha256_cpu_s(8 * 1024 * 1024) > 0
    assert floor.write_cpu_s(8 * 1024 * 1024, tmp_path) > 0
    assert list(tmp_path.iterdir()) == []
