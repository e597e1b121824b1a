"""A cache on a small real filesystem (a tmpfs in the mirror's own mount namespace) under real skopeo
pulls from a real registry: a blob that cannot be stored still reaches every client whole."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.artifacts import Pushed, push_artifact
from tests.support.catalog import MIB
from tests.support.digests import sha256
from tests.support.mirrorproc import MirrorProcess
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf

pytestmark = pytest.mark.skipif(
    __import__("os").geteuid() != 0, reason="a private tmpfs needs root (a mount namespace)"
)

#: The issue's row: a 64 MiB cache filesystem and a 268 MB blob.
CACHE_FS = "64m"
BIG = 268_000_000
LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"


def _push(registry: Registry, name: str, sizes: tuple[int, ...], seed: int) -> Pushed:
    """An image whose layers are `sizes` incompressible bytes (uncompressed tar media type: skopeo's
    `dir:` copy keeps them as they are)."""
    rng = random.Random(seed)
    layers = [rng.randbytes(size) for size in sizes]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(x) for x in layers]},
        }
    ).encode()
    return push_artifact(registry, name, "1", config=(CONFIG, config), layers=[(LAYER, x) for x in layers])


def _pull(mirror: MirrorProcess, name: str, dest: Path, tmp: Path) -> set[str]:
    """skopeo copy of `docker.io/NAME:1` through the mirror into a `dir:`; the digests it holds (skopeo
    checks every blob's digest itself; we hash them again)."""
    conf = write_registries_conf(tmp / "registries.conf", mirror.host)
    skopeo_copy(f"docker.io/{name}:1", dest, registries_conf=conf, tmpdir=tmp / "skopeo", format="dir")
    found = layout_digests(dest)
    for digest in found:
        data = (dest / digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return found


def _fill_up(path: Path) -> int:
    """Write `path` until the filesystem is full; the bytes written."""
    written = 0
    block = b"\0" * MIB
    with path.open("wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            try:
                written += file.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                block = block[: len(block) // 2]
                if not block:
                    break
    return written


def _blob_digests(image: Pushed) -> set[str]:
    return set(image.blobs)


def test_blob_bigger_than_the_cache_filesystem_is_pulled_whole(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    """Cache on a 64 MiB tmpfs, a 268 MB layer: skopeo pulls the image through the mirror with every
    digest right (the blob streamed from upstream, not stored), and the metric and log say so."""
    registry = make_registry()
    image = _push(registry, "library/big", (BIG,), seed=15)
    with MirrorProcess(tmp_path / "mirror", registry.url, cache_fs_size=CACHE_FS) as mirror:
        assert _blob_digests(image) <= _pull(mirror, "library/big", tmp_path / "pull", tmp_path)
        assert mirror.metric("mirror_blob_passthrough_total", reason="disk_full") >= 1
        assert any('"blob_not_stored"' in line for line in mirror.log_lines())
