"""Deterministic OCI image layouts written from Python, pushed to a registry with skopeo."""

from __future__ import annotations

import functools
import gzip
import io
import json
import random
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from tests.support.digests import sha256
from tests.support.net import http_request
from tests.support.registry import Registry
from tests.support.skopeo import run_skopeo

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT_ALL = ", ".join(MANIFEST_TYPES)
Format = Literal["oci", "v2s2"]
Platform = tuple[str, str]  # (os, architecture)


def canonical_json(obj: object) -> bytes:
    """Compact JSON with the key order given (what we push is exactly what we hash)."""
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class LayerSpec:
    """A layer holding one file of `size` incompressible bytes drawn from `random.Random(seed)`."""

    size: int
    seed: int

    @property
    def filename(self) -> str:
        """Path of the file inside the layer tar."""
        return f"data/blob-{self.seed}-{self.size}.bin"


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob as referenced from a manifest."""

    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class ImageInfo:
    """One single-platform image: its manifest and every blob it references."""

    name: str
    tag: str
    manifest_digest: str
    manifest_media_type: str
    manifest: bytes  # exact bytes pushed
    config: Blob
    layers: tuple[Blob, ...]
    platform: Platform

    @property
    def manifest_size(self) -> int:
        """Length of the manifest bytes."""
        return len(self.manifest)

    @property
    def config_digest(self) -> str:
        """Digest of the config blob."""
        return self.config.digest

    @property
    def layer_digests(self) -> list[str]:
        """Layer digests in manifest order."""
        return [layer.digest for layer in self.layers]

    @property
    def blobs(self) -> frozenset[str]:
        """Digests of all blobs (config + layers), without the manifest."""
        return frozenset([self.config.digest, *self.layer_digests])

    @property
    def ref(self) -> str:
        """NAME:TAG."""
        return f"{self.name}:{self.tag}"


@functools.lru_cache(maxsize=64)
def layer_bytes(spec: LayerSpec) -> tuple[bytes, str]:
    """(gzipped tar, diff_id) for `spec`; identical for identical specs, across runs."""
    payload = random.Random(spec.seed).randbytes(spec.size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(spec.filename)
        info.size = len(payload)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), sha256(tar_bytes)


def _write_blob(layout: Path, data: bytes, *, oci: bool) -> str:
    digest = sha256(data)
    hex_digest = digest.removeprefix("sha256:")
    path = layout / "blobs" / "sha256" / hex_digest if oci else layout / hex_digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def source_ref(layout: Path, tag: str) -> str:
    """skopeo source reference for a directory written by `build_layout`."""
    return f"oci:{layout}:{tag}" if (layout / "oci-layout").exists() else f"dir:{layout}"


def build_layout(
    layout: Path,
    *,
    layers: Sequence[LayerSpec],
    platform: Platform = ("linux", "amd64"),
    tag: str = "latest",
    fmt: Format = "oci",
    name: str = "",
) -> ImageInfo:
    """Write an image at `layout`, deterministically: `fmt="oci"` an OCI image layout (`oci:DIR:TAG`),
    `fmt="v2s2"` a skopeo `dir:` directory holding the exact Docker v2s2 manifest (skopeo's OCI-layout source
    only accepts OCI manifests, so a v2s2 one could only be produced by a conversion).
    """
    docker = fmt == "v2s2"
    layer_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    blobs: list[Blob] = []
    diff_ids: list[str] = []
    for spec in layers:
        data, diff_id = layer_bytes(spec)
        blobs.append(Blob(_write_blob(layout, data, oci=not docker), len(data), layer_type))
        diff_ids.append(diff_id)
    os_name, arch = platform
    config_doc = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": os_name,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"layer {s.filename}"} for s in layers],
    }
    config_data = canonical_json(config_doc)
    config = Blob(
        _write_blob(layout, config_data, oci=not docker),
        len(config_data),
        DOCKER_CONFIG if docker else OCI_CONFIG,
    )
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config),
        "layers": [descriptor(b) for b in blobs],
    }
    manifest = canonical_json(manifest_doc)
    digest = _write_blob(layout, manifest, oci=not docker)
    if docker:
        (layout / "manifest.json").write_bytes(manifest)
        (layout / "version").write_text("Directory Transport Version: 1.1\n")
        return ImageInfo(name, tag, digest, media_type, manifest, config, tuple(blobs), platform)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": media_type,
                "digest": digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_bytes(canonical_json(index))
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    return ImageInfo(name, tag, digest, media_type, manifest, config, tuple(blobs), platform)


def descriptor(blob: Blob, platform: Platform | None = None) -> dict[str, Any]:
    """An OCI/Docker descriptor for `blob` (with a platform for index entries)."""
    desc: dict[str, Any] = {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}
    if platform is not None:
        desc["platform"] = {"architecture": platform[1], "os": platform[0]}
    return desc


def manifest_digest(
    registry_host: str, name: str, reference: str, creds: tuple[str, str] | None = None
) -> tuple[str, str]:
    """(Docker-Content-Digest, Content-Type) of the manifest the registry stores for NAME:REFERENCE (HEAD)."""
    url = f"http://{registry_host}/v2/{name}/manifests/{reference}"
    resp = http_request("HEAD", url, headers={"Accept": ACCEPT_ALL}, creds=creds)
    if resp.status != 200:
        raise RuntimeError(f"HEAD {url} answered {resp.status}")
    return resp.headers["docker-content-digest"], resp.headers["content-type"]


def push(
    layout: Path,
    tag: str,
    registry_host: str,
    name: str,
    *,
    fmt: Format = "oci",
    creds: tuple[str, str] | None = None,
    reference: str | None = None,
    tmpdir: Path | None = None,
) -> str:
    """`skopeo copy oci:LAYOUT:TAG (or dir:LAYOUT) docker://HOST/NAME:REFERENCE`; returns the manifest digest
    the registry then reports. `reference` defaults to `tag`; "@sha256:..." pushes by digest (no tag).
    """
    ref = reference if reference is not None else tag
    sep = "" if ref.startswith("@") else ":"
    args = ["copy", "--quiet", "--retry-times", "0", "--dest-tls-verify=false", "--format", fmt]
    if creds is not None:
        args += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    args += [source_ref(layout, tag), f"docker://{registry_host}/{name}{sep}{ref}"]
    with tempfile.TemporaryDirectory(prefix="skopeo-", dir=tmpdir) as tmp:
        run_skopeo(args, Path(tmp))
    return manifest_digest(registry_host, name, ref.removeprefix("@"), creds)[0]


def push_image(
    layout: Path, info: ImageInfo, registry_host: str, name: str, *, by_digest: bool = False, **kw: Any
) -> ImageInfo:
    """Push a layout built by `build_layout` (no conversion) and check the registry stored the same digest."""
    fmt: Format = "v2s2" if info.manifest_media_type == DOCKER_MANIFEST else "oci"
    reference = "@" + info.manifest_digest if by_digest else None
    stored = push(layout, info.tag, registry_host, name, fmt=fmt, reference=reference, **kw)
    if stored != info.manifest_digest:
        raise RuntimeError(
            f"{name}: registry stored {stored}, built {info.manifest_digest} (skopeo converted?)"
        )
    return replace(info, name=name, tag="" if by_digest else info.tag)


def index_bytes(children: Sequence[tuple[str, int, str, Platform]], media_type: str = OCI_INDEX) -> bytes:
    """An OCI index or Docker manifest list over (digest, size, media type, (os, arch)) children."""
    manifests = [descriptor(Blob(d, s, mt), platform) for d, s, mt, platform in children]
    return canonical_json({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})


def put_manifest(
    registry_url: str,
    name: str,
    reference: str,
    data: bytes,
    media_type: str,
    creds: tuple[str, str] | None = None,
) -> str:
    """PUT manifest bytes at NAME:REFERENCE (tag or digest); return the digest the registry reports."""
    url = f"{registry_url}/v2/{name}/manifests/{reference}"
    resp = http_request(
        "PUT",
        url,
        headers={"Content-Type": media_type},
        body=data,
        creds=creds,
        scope=f"repository:{name}:pull,push",
    )
    if resp.status != 201:
        raise RuntimeError(f"PUT {url} answered {resp.status}: {resp.body[:300]!r}")
    digest = resp.headers["docker-content-digest"]
    if digest != sha256(data):
        raise RuntimeError(f"PUT {url}: registry digest {digest} != {sha256(data)}")
    return digest


def put_index(
    registry: Registry,
    name: str,
    tag: str,
    children: Sequence[tuple[str, int, str, Platform]],
    media_type: str = OCI_INDEX,
) -> tuple[str, bytes]:
    """PUT an OCI index / Docker manifest list over pushed children; return (digest, exact bytes)."""
    data = index_bytes(children, media_type)
    return put_manifest(registry.url, name, tag, data, media_type, registry.creds), data
