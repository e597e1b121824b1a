"""OCI artifacts pushed into a real registry over plain HTTP, as helm, oras and cosign push them: blobs by
monolithic upload, manifests with `artifactType`, an empty config or a `subject`, fallback tag indexes."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.digests import sha256
from tests.support.images import OCI_INDEX, OCI_MANIFEST, canonical_json, put_manifest
from tests.support.net import http_request
from tests.support.registry import Registry

EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_DATA = b"{}"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
WASM_LAYER = "application/wasm"
COSIGN_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
SPDX = "application/spdx+json"


@dataclass(frozen=True)
class Pushed:
    """A manifest pushed, with the exact bytes and every blob it references (digest → bytes)."""

    name: str
    digest: str
    manifest: bytes
    media_type: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    artifact_type: str | None = None

    def descriptor(self) -> dict[str, Any]:
        """Its descriptor, with `artifactType` when it has one (as a referrers list holds it)."""
        found: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.manifest),
        }
        if self.artifact_type is not None:
            found["artifactType"] = self.artifact_type
        return found


def put_blob(registry: Registry, name: str, data: bytes) -> str:
    """Upload a blob in one PUT (POST an upload, PUT its Location with `?digest=`); its digest."""
    digest = sha256(data)
    scope = f"repository:{name}:pull,push"
    start = http_request(
        "POST", f"{registry.url}/v2/{name}/blobs/uploads/", creds=registry.creds, scope=scope
    )
    if start.status != 202:
        raise RuntimeError(f"upload of {digest} to {name} answered {start.status}: {start.body[:300]!r}")
    location = urllib.parse.urljoin(registry.url, start.headers["location"])
    sep = "&" if "?" in location else "?"
    done = http_request(
        "PUT",
        f"{location}{sep}digest={digest}",
        headers={"Content-Type": "application/octet-stream"},
        body=data,
        creds=registry.creds,
        scope=scope,
    )
    if done.status != 201:
        raise RuntimeError(f"upload of {digest} to {name} answered {done.status}: {done.body[:300]!r}")
    return digest


def push_artifact(
    registry: Registry,
    name: str,
    reference: str | None,
    *,
    config: tuple[str, bytes],
    layers: Sequence[tuple[str, bytes]],
    artifact_type: str | None = None,
    subject: Pushed | None = None,
    annotations: dict[str, str] | None = None,
) -> Pushed:
    """Push an OCI manifest over `config` (media type, bytes) and `layers`, tagged `reference` (by digest
    when None), with `artifactType` and `subject` when given."""
    blobs: dict[str, bytes] = {}
    descriptors = []
    for media_type, data in (config, *layers):
        digest = put_blob(registry, name, data)
        blobs[digest] = data
        descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if media_type == EMPTY_TYPE:
            descriptor["data"] = base64.b64encode(data).decode()
        descriptors.append(descriptor)
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    doc["config"], doc["layers"] = descriptors[0], descriptors[1:]
    if subject is not None:
        doc["subject"] = {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": len(subject.manifest),
        }
    if annotations:
        doc["annotations"] = annotations
    body = canonical_json(doc)
    digest = put_manifest(registry.url, name, reference or sha256(body), body, OCI_MANIFEST, registry.creds)
    return Pushed(name, digest, body, OCI_MANIFEST, blobs, artifact_type)


def push_fallback_index(registry: Registry, subject: Pushed, referrers: Sequence[Pushed]) -> Pushed:
    """The referrers tag schema: an OCI index of `referrers` under the tag `sha256-<hex of subject>`."""
    body = canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [r.descriptor() for r in referrers]}
    )
    tag = subject.digest.replace(":", "-")
    digest = put_manifest(registry.url, subject.name, tag, body, OCI_INDEX, registry.creds)
    return Pushed(subject.name, digest, body, OCI_INDEX)


def push_image(registry: Registry, name: str, tag: str, seed: int) -> Pushed:
    """A tiny single-layer OCI image (config + one gzipped layer), distinct per `seed`."""
    config = canonical_json(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    )
    layer = gzip.compress(b"layer %d" % seed, mtime=0)
    return push_artifact(
        registry,
        name,
        tag,
        config=("application/vnd.oci.image.config.v1+json", config),
        layers=[("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
    )


def helm_chart_bytes(chart: str, version: str) -> bytes:
    """A gzipped tar holding `<chart>/Chart.yaml`, as `helm package` makes it."""
    chart_yaml = f"apiVersion: v2\nname: {chart}\nversion: {version}\n".encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"{chart}/Chart.yaml")
        info.size, info.mtime, info.mode = len(chart_yaml), 0, 0o644
        tar.addfile(info, io.BytesIO(chart_yaml))
    return gzip.compress(raw.getvalue(), mtime=0)


def push_helm_chart(registry: Registry, name: str, chart: str, version: str) -> Pushed:
    """A Helm chart as `helm push` stores it: helm config JSON and one chart tarball layer."""
    config = json.dumps({"apiVersion": "v2", "name": chart, "version": version}).encode()
    return push_artifact(
        registry,
        name,
        version,
        config=(HELM_CONFIG, config),
        layers=[(HELM_CHART, helm_chart_bytes(chart, version))],
    )


def push_wasm_module(registry: Registry, name: str, tag: str) -> Pushed:
    """A WASM module as the wasm-to-oci convention stores it: a wasm config and the module as its layer."""
    module = b"\x00asm\x01\x00\x00\x00" + bytes(range(64))
    return push_artifact(registry, name, tag, config=(WASM_CONFIG, b"{}"), layers=[(WASM_LAYER, module)])
