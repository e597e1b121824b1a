"""A byte that rots in a cached layer, against a real upstream (docker-registry), a real mirror process
restarted over its cache, and a real client (skopeo)."""

from __future__ import annotations

from pathlib import Path

from mirror.storage.blobs import BlobStore
from tests.support.catalog import Catalog
from tests.support.mirrorproc import MirrorProcess
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf


def _flip_stored(cache_dir: Path, digest: str) -> None:
    """Flip one byte in the middle of the stored file of `digest` (the mirror is not running)."""
    store = BlobStore(cache_dir)
    try:
        found = store.open(digest)
        assert found is not None
        assert found.where is not None
        found.close()
    finally:
        store.close()
    with found.where.path.open("r+b") as file:
        file.seek(found.size // 2)
        byte = file.read(1)
        file.seek(found.size // 2)
        file.write(bytes([byte[0] ^ 0xFF]))


def test_rotted_layer_fails_one_pull_then_heals(catalog: Catalog, upstream: Registry, tmp_path: Path) -> None:
    """A byte flipped in a cached 300 KiB layer: after a restart the first skopeo pull through the
    mirror is cut short on that layer (it fails, never with the wrong bytes), the mirror drops the
    entry, and the next pull succeeds with the layer fetched again from the registry."""
    layer = max(catalog.v2img.layers, key=lambda b: b.size)
    mirror = MirrorProcess(tmp_path / "mirror", upstream.url, env={"MIRROR_SCRUB_RATE": "0"})
    conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)

    def pull(dest: str) -> bool:
        done = skopeo_copy(
            "docker.io/library/v2img:latest",
            tmp_path / dest,
            registries_conf=conf,
            tmpdir=tmp_path / "skopeo",
            format="dir",
            check=False,
        )
        return done.returncode == 0 and catalog.v2img.blobs <= layout_digests(tmp_path / dest)

    with mirror:
        assert pull("warm")
    _flip_stored(mirror.cache_dir, layer.digest)
    with mirror:
        since = upstream.mark()
        assert not pull("rotted")
        assert mirror.metric("mirror_blob_corrupt_total", by="serve") == 1
        assert pull("healed")
        refetched = [r.route for r in upstream.blob_gets(since)]
        assert refetched == [f"/v2/library/v2img/blobs/{layer.digest}"]
