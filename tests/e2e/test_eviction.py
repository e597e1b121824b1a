"""A small cache past its limit under real skopeo pulls: LRU eviction, a pinned image, a re-pull."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.catalog import MIB, ImageSpec, seed_image
from tests.support.images import ImageInfo, LayerSpec
from tests.support.mirrorproc import MirrorProcess
from tests.support.polling import wait_until
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf


def test_lru_eviction_spares_the_pinned_image_and_evicted_images_pull_again(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    """Limit 10.2 MiB, four 3 MiB images: the pinned one is warmed at start; pulling three more evicts
    the least recently used one only; pulling it again works and refetches it; the others cost nothing."""
    registry = make_registry()
    images: dict[str, ImageInfo] = {
        name: seed_image(
            registry,
            ImageSpec(f"library/{name}", "1", (LayerSpec(3 * MIB, seed=seed),), "oci"),
            tmp_path / "seed",
        )
        for seed, name in enumerate(("pinned", "first", "second", "third"), start=50)
    }
    env = {"MIRROR_CACHE_MAX_BYTES": str(int(10.2 * MIB)), "MIRROR_PINS": "pinned:1"}
    with MirrorProcess(tmp_path / "mirror", registry.url, env=env) as mirror:
        wait_until(lambda: mirror.metric("mirror_cache_pinned_bytes") > 3 * MIB, what="the pin warmed")
        conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)

        def pull(name: str, attempt: int = 0) -> set[str]:
            dest = tmp_path / f"{name}-{attempt}"
            skopeo_copy(
                f"docker.io/library/{name}:1", dest, registries_conf=conf, tmpdir=tmp_path / "s", format="dir"
            )
            return layout_digests(dest)

        for name in ("first", "second", "third"):
            assert images[name].blobs <= pull(name)
        wait_until(lambda: mirror.metric("mirror_cache_evictions_total") >= 1, what="an eviction")
        mark = registry.mark()
        for name in ("pinned", "second", "third"):
            assert images[name].blobs <= pull(name, 1)
        assert registry.blob_gets(mark) == []
        assert images["first"].blobs <= pull("first", 1)
        refetched = {r.route.rsplit("/", 1)[1] for r in registry.blob_gets(mark)}
        assert set(images["first"].layer_digests) <= refetched <= images["first"].blobs
