"""Real parts end to end: skopeo pulls through `python -m mirror serve` from a real docker-registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.images import ImageInfo
from tests.support.mirrorproc import MirrorProcess
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf


@pytest.fixture
def mirror(tmp_path: Path, upstream: Registry) -> Iterator[MirrorProcess]:
    """A fresh mirror (empty cache) whose upstream is the seeded registry."""
    with MirrorProcess(tmp_path / "mirror", upstream.url) as proc:
        yield proc


@pytest.fixture
def conf(tmp_path: Path, mirror: MirrorProcess) -> Path:
    """A registries.conf making the mirror the docker.io mirror, as podman/CRI-O users write it."""
    return write_registries_conf(tmp_path / "registries.conf", mirror.host)


def pull(
    ref: str, dest: Path, conf: Path, tmp: Path, *, all_images: bool = False, override_arch: str | None = None
) -> set[str]:
    """skopeo copy docker.io/REF through the mirror into a `dir:` copy; the blob digests it holds."""
    skopeo_copy(
        f"docker.io/{ref}",
        dest,
        registries_conf=conf,
        tmpdir=tmp,
        format="dir",
        all_images=all_images,
        override_arch=override_arch,
    )
    return layout_digests(dest)


@pytest.mark.parametrize("image", ["v2img", "ociimg", "app", "big"])
def test_image_pulls_through_mirror_with_exact_digests(
    image: str,
    catalog: Catalog,
    upstream: Registry,
    mirror: MirrorProcess,
    conf: Path,
    skopeo_tmp: Path,
    tmp_path: Path,
) -> None:
    """skopeo pulls each seeded image through the mirror and gets exactly the upstream's blobs."""
    info: ImageInfo = getattr(catalog, image)
    mark = upstream.mark()
    got = pull(info.ref, tmp_path / "out", conf, skopeo_tmp)
    assert info.blobs <= got
    fetched = {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(mark)}
    assert fetched == set(info.blobs)
    assert mirror.metric("mirror_requests_total", kind="blob", result="miss") == len(info.blobs)


def test_second_pull_sends_no_blob_or_manifest_get_upstream(
    catalog: Catalog, upstream: Registry, mirror: MirrorProcess, conf: Path, skopeo_tmp: Path, tmp_path: Path
) -> None:
    """A warm pull is served from the cache: the upstream sees no blob GET and no manifest GET."""
    pull(catalog.v2img.ref, tmp_path / "first", conf, skopeo_tmp)
    mark = upstream.mark()
    got = pull(catalog.v2img.ref, tmp_path / "second", conf, skopeo_tmp)
    assert catalog.v2img.blobs <= got
    assert upstream.blob_gets(mark) == []
    assert upstream.manifest_gets(mark) == []
    assert mirror.metric("mirror_requests_total", kind="blob", result="hit") >= len(catalog.v2img.blobs)


def test_layer_shared_across_repositories_is_fetched_once(
    catalog: Catalog, upstream: Registry, conf: Path, skopeo_tmp: Path, tmp_path: Path
) -> None:
    """A layer team/app shares with library/v2img is served from the cache: one copy per digest."""
    pull(catalog.v2img.ref, tmp_path / "v2img", conf, skopeo_tmp)
    mark = upstream.mark()
    got = pull(catalog.app.ref, tmp_path / "app", conf, skopeo_tmp)
    assert catalog.app.blobs <= got
    fetched = {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(mark)}
    shared = catalog.app.blobs & catalog.v2img.blobs
    assert shared
    assert fetched == set(catalog.app.blobs - shared)


@pytest.mark.parametrize("index", ["multi", "dlist"])
def test_multi_platform_index_pulls_every_platform(
    index: str, catalog: Catalog, conf: Path, skopeo_tmp: Path, tmp_path: Path
) -> None:
    """An OCI index and a Docker manifest list pull with --all: every platform's blobs arrive intact."""
    info = getattr(catalog, index)
    got = pull(info.ref, tmp_path / "out", conf, skopeo_tmp, all_images=True)
    assert info.blobs <= got


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_index_resolves_the_asked_platform(
    arch: str, catalog: Catalog, upstream: Registry, conf: Path, skopeo_tmp: Path, tmp_path: Path
) -> None:
    """Pulling one platform of an index fetches just that child's blobs."""
    child = catalog.multi.child(arch)
    mark = upstream.mark()
    got = pull(catalog.multi.ref, tmp_path / "out", conf, skopeo_tmp, override_arch=arch)
    assert child.blobs <= got
    assert {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(mark)} == set(child.blobs)
