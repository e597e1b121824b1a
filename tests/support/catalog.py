"""The standard test images, seeded into a registry once; every digest is known to the tests."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import (
    DOCKER_LIST,
    OCI_INDEX,
    Format,
    ImageInfo,
    LayerSpec,
    Platform,
    build_layout,
    push_image,
    put_index,
)
from tests.support.registry import Registry

KIB = 1024
MIB = 1024 * KIB
AMD64: Platform = ("linux", "amd64")
ARM64: Platform = ("linux", "arm64")
SHARED_LAYER = LayerSpec(10 * KIB, seed=1)  # in library/v2img and team/app


@dataclass(frozen=True)
class ImageSpec:
    """What to build and where to push it."""

    name: str
    tag: str
    layers: tuple[LayerSpec, ...]
    fmt: Format
    platform: Platform = AMD64


@dataclass(frozen=True)
class IndexInfo:
    """An OCI index or Docker manifest list and its (by-digest pushed) children."""

    name: str
    tag: str
    digest: str
    media_type: str
    manifest: bytes  # exact bytes pushed
    children: tuple[ImageInfo, ...]

    @property
    def ref(self) -> str:
        """NAME:TAG."""
        return f"{self.name}:{self.tag}"

    def child(self, arch: str, os: str = "linux") -> ImageInfo:
        """The child image for a platform."""
        return next(c for c in self.children if c.platform == (os, arch))

    @property
    def blobs(self) -> frozenset[str]:
        """All children's config and layer digests."""
        return frozenset().union(*(c.blobs for c in self.children))

    @property
    def manifest_digests(self) -> frozenset[str]:
        """The index digest and every child manifest digest."""
        return frozenset([self.digest, *(c.manifest_digest for c in self.children)])


@dataclass(frozen=True)
class Catalog:
    """Everything `seed` pushed."""

    v2img: ImageInfo  # library/v2img:latest, Docker v2s2, 10 KiB + 300 KiB layers
    ociimg: ImageInfo  # library/ociimg:latest, OCI, 1 layer
    multi: IndexInfo  # library/multi:latest, OCI index, linux/amd64 + linux/arm64
    dlist: IndexInfo  # library/dlist:latest, Docker manifest list, linux/amd64 + linux/arm64
    app: ImageInfo  # team/app:1.0, 3 layers, the first shared with library/v2img
    big: ImageInfo  # library/big:latest, one 8 MiB layer

    @property
    def images(self) -> tuple[ImageInfo, ...]:
        """The single-platform images pushed by tag."""
        return (self.v2img, self.ociimg, self.app, self.big)


SPECS: dict[str, ImageSpec] = {
    "v2img": ImageSpec("library/v2img", "latest", (SHARED_LAYER, LayerSpec(300 * KIB, seed=2)), "v2s2"),
    "ociimg": ImageSpec("library/ociimg", "latest", (LayerSpec(20 * KIB, seed=3),), "oci"),
    "multi-amd64": ImageSpec("library/multi", "amd64", (LayerSpec(12 * KIB, seed=4),), "oci", AMD64),
    "multi-arm64": ImageSpec("library/multi", "arm64", (LayerSpec(14 * KIB, seed=5),), "oci", ARM64),
    "dlist-amd64": ImageSpec("library/dlist", "amd64", (LayerSpec(16 * KIB, seed=6),), "v2s2", AMD64),
    "dlist-arm64": ImageSpec("library/dlist", "arm64", (LayerSpec(18 * KIB, seed=7),), "v2s2", ARM64),
    "app": ImageSpec(
        "team/app", "1.0", (SHARED_LAYER, LayerSpec(40 * KIB, seed=8), LayerSpec(50 * KIB, seed=9)), "v2s2"
    ),
    "big": ImageSpec("library/big", "latest", (LayerSpec(8 * MIB, seed=10),), "oci"),
}
_BY_DIGEST = {"multi-amd64", "multi-arm64", "dlist-amd64", "dlist-arm64"}


def seed_image(
    registry: Registry, spec: ImageSpec, workdir: Path, *, by_digest: bool = False, name: str | None = None
) -> ImageInfo:
    """Build `spec` under `workdir` and push it with skopeo (by digest: no tag is created)."""
    layout = workdir / "layouts" / f"{spec.name.replace('/', '_')}_{spec.tag}"
    info = build_layout(layout, layers=list(spec.layers), platform=spec.platform, tag=spec.tag, fmt=spec.fmt)
    return push_image(
        layout,
        info,
        registry.host,
        name or spec.name,
        by_digest=by_digest,
        creds=registry.creds,
        tmpdir=workdir,
    )


def _index(
    registry: Registry, name: str, tag: str, children: Sequence[ImageInfo], media_type: str
) -> IndexInfo:
    entries = [(c.manifest_digest, c.manifest_size, c.manifest_media_type, c.platform) for c in children]
    digest, data = put_index(registry, name, tag, entries, media_type)
    return IndexInfo(name, tag, digest, media_type, data, tuple(children))


def seed(registry: Registry, workdir: Path | None = None) -> Catalog:
    """Push the standard catalog (see `Catalog`) into `registry`; layouts are built under `workdir`."""
    with tempfile.TemporaryDirectory(prefix="seed-") as tmp:
        base = workdir if workdir is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures: dict[str, Future[ImageInfo]] = {
                key: pool.submit(seed_image, registry, spec, base, by_digest=key in _BY_DIGEST)
                for key, spec in SPECS.items()
            }
            done = {key: future.result() for key, future in futures.items()}
        multi = _index(
            registry, "library/multi", "latest", [done["multi-amd64"], done["multi-arm64"]], OCI_INDEX
        )
        dlist = _index(
            registry, "library/dlist", "latest", [done["dlist-amd64"], done["dlist-arm64"]], DOCKER_LIST
        )
        return Catalog(done["v2img"], done["ociimg"], multi, dlist, done["app"], done["big"])
