"""A cache on a small real filesystem (a tmpfs in the mirror's own mount namespace) under real skopeo
pulls from a real registry: a blob that cannot be stored still reaches every client whole."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.artifacts import Pushed, push_artifact
from tests.support.catalog import MIB
from tests.support.digests import sha256
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.polling import wait_until
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf
from tests.support.throttle import ThrottledProxy

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


def test_full_cache_filesystem_still_serves_cold_images(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    """The cache filesystem full: /readyz says degraded, and a cold image still pulls whole with skopeo
    (manifests served though not cached, blobs streamed from upstream instead of 200 with 0 bytes)."""
    registry = make_registry()
    image = _push(registry, "library/cold", (3 * MIB, 200 * 1000), seed=16)
    env = {"MIRROR_DISK_RESERVE_BYTES": str(8 * MIB)}
    with MirrorProcess(tmp_path / "mirror", registry.url, env=env, cache_fs_size=CACHE_FS) as mirror:
        assert json.loads(mirror.get("/readyz").body)["status"] == "ready"
        assert _fill_up(mirror.cache_path("filler")) > 32 * MIB
        ready = mirror.get("/readyz")
        assert (ready.status, json.loads(ready.body)["status"]) == (200, "degraded")
        assert _blob_digests(image) <= _pull(mirror, "library/cold", tmp_path / "pull", tmp_path)
        assert mirror.metric("mirror_blob_passthrough_total", reason="disk_full") == len(image.blobs)


def _get_blob(url: str) -> tuple[int, str, int]:
    """GET a blob: (status, sha256 of the body, its length)."""
    resp = raw_request("GET", url, timeout=30)
    return resp.status, sha256(resp.body), len(resp.body)


def _temp_bytes(mirror: MirrorProcess) -> int:
    return sum(p.stat().st_size for p in mirror.cache_path("tmp").iterdir())


def test_disk_full_mid_fill_hands_each_reader_on_to_its_own_ranged_request(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    """A fill (upstream throttled to 20 MB/s) hits ENOSPC after the filesystem is filled beside it: the
    reader that started it and one that joined mid-way each get the whole 40 MB blob with the right
    digest, the rest through their own ranged upstream request (206 at the registry)."""
    registry = make_registry()
    image = _push(registry, "library/mid", (40 * 1000 * 1000,), seed=17)
    (layer,) = [d for d, data in image.blobs.items() if len(data) > MIB]
    with (
        ThrottledProxy(int(registry.url.rsplit(":", 1)[1]), rate=20 * 1000 * 1000) as throttled,
        MirrorProcess(tmp_path / "mirror", throttled.url, cache_fs_size=CACHE_FS) as mirror,
        ThreadPoolExecutor(2) as pool,
    ):
        url = f"{mirror.url}/v2/library/mid/blobs/{layer}"
        first = pool.submit(_get_blob, url)
        wait_until(lambda: _temp_bytes(mirror) > 4 * MIB, what="the fill under way")
        second = pool.submit(_get_blob, url)
        wait_until(lambda: mirror.metric("mirror_fill_readers_joined_total") == 1, what="a second reader")
        _fill_up(mirror.cache_path("filler"))
        for reader in (first, second):
            assert reader.result() == (200, layer, 40 * 1000 * 1000)
        assert mirror.metric("mirror_blob_passthrough_total", reason="disk_full") == 2
        ranged = [r for r in registry.blob_gets() if r.route.endswith(layer) and r.status == 206]
        assert len(ranged) == 2
        (not_stored,) = [json.loads(x) for x in mirror.log_lines() if '"blob_not_stored"' in x]
        assert not_stored["bytes"] > 4 * MIB
