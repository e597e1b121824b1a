"""The upstream's content, built once per spec and kept under /tmp for later runs.

- `bench/big:v1`: an OCI image with one uncompressed tar layer of exactly `big_size` bytes (1 GiB by
  default) of seeded random bytes, and a config padded to 369 bytes: that config is the small blob.
- `bench/layers:v1`: a Docker v2 image with six gzipped layers of varied sizes (~33 MiB), pushed by skopeo.

The big image is pushed over plain HTTP (monolithic upload): skopeo would gzip an uncompressed layer on the
way to a registry, which takes long and changes its digest. Every run starts a fresh upstream registry
process over the cached storage directory; nothing there is written after seeding.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import shutil
import tarfile
import tempfile
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support.catalog import ImageSpec, seed_image
from tests.support.digests import sha256
from tests.support.images import OCI_CONFIG, OCI_MANIFEST, LayerSpec, canonical_json, put_manifest
from tests.support.registry import Registry, start_registry

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
SEED_ROOT = Path(tempfile.gettempdir()) / "mirror-bench-seed"
FORMAT_VERSION = 1
BIG_NAME, BIG_TAG = "bench/big", "v1"
LAYERS_NAME, LAYERS_TAG = "bench/layers", "v1"
SMALL_SIZE = 369
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_SPECS = (
    LayerSpec(512 * KIB, seed=101),
    LayerSpec(2 * MIB, seed=102),
    LayerSpec(4 * MIB, seed=103),
    LayerSpec(6 * MIB, seed=104),
    LayerSpec(8 * MIB, seed=105),
    LayerSpec(12 * MIB, seed=106),
)
BIG_SEED = 8
_CHUNK = 8 * MIB
_TAR_OVERHEAD = 512 + 1024  # one header block, and the two zero blocks that end an archive
_UPLOAD_TIMEOUT_S = 300


@dataclass(frozen=True)
class Seeded:
    """What the upstream holds, with every digest and size the scenarios need."""

    big_name: str
    big_tag: str
    big_manifest_digest: str
    big_manifest_type: str
    big_digest: str
    big_size: int
    small_name: str  # the small blob is the big image's config
    small_digest: str
    small_size: int
    layers_name: str
    layers_tag: str
    layers_blobs: tuple[str, ...]  # config and layer digests of bench/layers
    layers_image_bytes: int  # manifest + config + layers


def blob_path(storage: Path, digest: str) -> Path:
    """Where docker-registry's filesystem driver keeps the bytes of `digest` under `storage`."""
    hex_digest = digest.removeprefix("sha256:")
    return storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"


def _key(big_size: int) -> str:
    spec = [FORMAT_VERSION, big_size, BIG_SEED, [(s.size, s.seed) for s in LAYER_SPECS]]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def write_big_layer(path: Path, size: int, seed: int) -> str:
    """A tar of exactly `size` bytes holding one file of seeded random bytes; returns its digest."""
    if size % 512 or size <= _TAR_OVERHEAD:
        raise ValueError(f"layer size must be a multiple of 512 above {_TAR_OVERHEAD}: {size}")
    payload = size - _TAR_OVERHEAD
    info = tarfile.TarInfo("data/big.bin")
    info.size, info.mtime, info.mode, info.uid, info.gid = payload, 0, 0o644, 0, 0
    info.uname = info.gname = ""
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    hasher = hashlib.sha256(header)
    rng = random.Random(seed)
    with path.open("wb") as out:
        out.write(header)
        left = payload
        while left:
            chunk = rng.randbytes(min(_CHUNK, left))
            hasher.update(chunk)
            out.write(chunk)
            left -= len(chunk)
        trailer = bytes(1024)
        hasher.update(trailer)
        out.write(trailer)
    return "sha256:" + hasher.hexdigest()


def padded_config(diff_id: str, size: int = SMALL_SIZE) -> bytes:
    """An OCI image config for the big image, padded to exactly `size` bytes."""
    doc = {
        "created": "1970-01-01T00:00:00Z",
        "author": "",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    missing = size - len(canonical_json(doc))
    if missing < 0:
        raise ValueError(f"config is already {size - missing} bytes")
    doc["author"] = "mirror-bench".ljust(missing, ".")[:missing]
    data = canonical_json(doc)
    assert len(data) == size, len(data)
    return data


def upload_blob(registry: Registry, name: str, body: bytes | Path, digest: str) -> None:
    """Monolithic upload: POST an upload session, then PUT the whole body with `?digest=`."""
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=_UPLOAD_TIMEOUT_S, blocksize=MIB)
    try:
        conn.request("POST", f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        resp.read()
        location = resp.getheader("Location")
        if resp.status != 202 or location is None:
            raise RuntimeError(f"POST upload for {name} answered {resp.status}")
        parts = urllib.parse.urlsplit(location)
        query = (parts.query + "&" if parts.query else "") + urllib.parse.urlencode({"digest": digest})
        length = len(body) if isinstance(body, bytes) else body.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        if isinstance(body, bytes):
            conn.request("PUT", f"{parts.path}?{query}", body=body, headers=headers)
            resp = conn.getresponse()
        else:
            with body.open("rb") as stream:
                conn.request("PUT", f"{parts.path}?{query}", body=stream, headers=headers)
                resp = conn.getresponse()
        detail = resp.read()[:300]
        if resp.status != 201:
            raise RuntimeError(f"PUT blob {digest} to {name} answered {resp.status}: {detail!r}")
    finally:
        conn.close()


def _push_big(registry: Registry, build: Path, big_size: int) -> dict[str, str | int]:
    layer = build / "big.tar"
    digest = write_big_layer(layer, big_size, BIG_SEED)
    upload_blob(registry, BIG_NAME, layer, digest)
    layer.unlink()
    config = padded_config(digest)
    config_digest = sha256(config)
    upload_blob(registry, BIG_NAME, config, config_digest)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": digest, "size": big_size}],
        }
    )
    manifest_digest = put_manifest(registry.url, BIG_NAME, BIG_TAG, manifest, OCI_MANIFEST)
    return {
        "big_manifest_digest": manifest_digest,
        "big_digest": digest,
        "small_digest": config_digest,
        "small_size": len(config),
    }


def _seed(root: Path, big_size: int) -> Seeded:
    build = root / "build"
    build.mkdir(parents=True)
    registry = start_registry(root / "registry")
    try:
        big = _push_big(registry, build, big_size)
        spec = ImageSpec(LAYERS_NAME, LAYERS_TAG, LAYER_SPECS, "v2s2")
        image = seed_image(registry, spec, build)
    finally:
        registry.stop()
        shutil.rmtree(build, ignore_errors=True)
    return Seeded(
        big_name=BIG_NAME,
        big_tag=BIG_TAG,
        big_manifest_digest=str(big["big_manifest_digest"]),
        big_manifest_type=OCI_MANIFEST,
        big_digest=str(big["big_digest"]),
        big_size=big_size,
        small_name=BIG_NAME,
        small_digest=str(big["small_digest"]),
        small_size=int(big["small_size"]),
        layers_name=LAYERS_NAME,
        layers_tag=LAYERS_TAG,
        layers_blobs=tuple(sorted(image.blobs)),
        layers_image_bytes=image.manifest_size + image.config.size + sum(b.size for b in image.layers),
    )


def ensure_seeded(big_size: int) -> tuple[Seeded, Path]:
    """The seeded content and the storage directory holding it, built now unless cached from a run before."""
    root = SEED_ROOT / _key(big_size)
    meta = root / "seeded.json"
    storage = root / "registry" / "storage"
    if meta.is_file():
        raw = json.loads(meta.read_text())
        raw["layers_blobs"] = tuple(raw["layers_blobs"])
        seeded = Seeded(**raw)
        if blob_path(storage, seeded.big_digest).is_file():
            return seeded, storage
    shutil.rmtree(root, ignore_errors=True)
    seeded = _seed(root, big_size)
    partial = meta.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(seeded), indent=2))
    partial.rename(meta)  # written last: a half-seeded cache is never taken for a complete one
    return seeded, storage
