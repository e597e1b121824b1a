"""OCI artifacts through the mirror: a Helm chart, a WASM module, an artifact with `artifactType` and the
empty config, and an index of artifacts, pushed into a real docker-registry over HTTP and pulled, prefetched,
warmed and served from the cache like images, nothing assuming a manifest is an image."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.artifacts import (
    EMPTY_DATA,
    EMPTY_TYPE,
    Pushed,
    push_artifact,
    push_helm_chart,
    push_wasm_module,
)
from tests.support.digests import sha256
from tests.support.images import OCI_INDEX, OCI_MANIFEST, canonical_json, put_manifest
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry

THING = "application/vnd.example.thing.v1"
ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}


@dataclass(frozen=True)
class Artifacts:
    chart: Pushed  # artifacts/chart:0.1.0
    wasm: Pushed  # artifacts/wasm:v1
    thing: Pushed  # artifacts/thing:1, artifactType + empty config
    bundle: Pushed  # artifacts/bundle:1, an index of two artifacts without platforms
    children: tuple[Pushed, ...]  # the bundle's artifacts, pushed by digest

    @property
    def refs(self) -> dict[str, Pushed]:
        """Image reference (as `mirror warm` takes it) → what was pushed under it."""
        tags = {"chart": "0.1.0", "wasm": "v1", "thing": "1", "bundle": "1"}
        return {f"docker.io/{p.name}:{tags[p.name.split('/')[1]]}": p for p in self.every}

    @property
    def every(self) -> tuple[Pushed, ...]:
        return (self.chart, self.wasm, self.thing, self.bundle)


@pytest.fixture
def registry(make_registry: Callable[..., Registry]) -> Registry:
    """A private upstream (one test stops it)."""
    return make_registry()


@pytest.fixture
def artifacts(registry: Registry) -> Artifacts:
    chart = push_helm_chart(registry, "artifacts/chart", "demo", "0.1.0")
    wasm = push_wasm_module(registry, "artifacts/wasm", "v1")
    thing = push_artifact(
        registry,
        "artifacts/thing",
        "1",
        config=(EMPTY_TYPE, EMPTY_DATA),
        layers=[("application/vnd.example.thing.layer.v1", b"thing bytes " * 100)],
        artifact_type=THING,
    )
    children = [
        push_artifact(
            registry, "artifacts/bundle", None, config=(EMPTY_TYPE, EMPTY_DATA), layers=[(mt, data)]
        )
        for mt, data in (("application/vnd.example.a", b"a" * 300), ("application/vnd.example.b", b"b" * 400))
    ]
    body = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": THING,
            "manifests": [c.descriptor() for c in children],
        }
    )
    digest = put_manifest(registry.url, "artifacts/bundle", "1", body, OCI_INDEX)
    blobs = {d: b for c in children for d, b in c.blobs.items()}
    bundle = Pushed("artifacts/bundle", digest, body, OCI_INDEX, blobs, THING)
    return Artifacts(chart, wasm, thing, bundle, tuple(children))


@pytest.fixture
def mirror(tmp_path: Path, registry: Registry) -> Iterator[MirrorProcess]:
    with MirrorProcess(tmp_path / "mirror", registry.url, env={"MIRROR_PREFETCH": "true"}) as proc:
        yield proc


def pull(mirror: MirrorProcess, pushed: Pushed, reference: str) -> None:
    """Pull `pushed` through the mirror by `reference` and by digest, and its blobs: exact bytes each."""
    for ref in (reference, pushed.digest):
        resp = raw_request("GET", f"{mirror.url}/v2/{pushed.name}/manifests/{ref}", headers=ACCEPT)
        assert resp.status == 200, resp.body[:300]
        assert resp.body == pushed.manifest
        assert resp.headers["docker-content-digest"] == pushed.digest
        assert resp.headers["content-type"] == pushed.media_type
    for digest, data in pushed.blobs.items():
        blob = raw_request("GET", f"{mirror.url}/v2/{pushed.name}/blobs/{digest}")
        assert (blob.status, sha256(blob.body), blob.body == data) == (200, digest, True)


def test_artifacts_pull_through_and_are_cached(
    artifacts: Artifacts, registry: Registry, mirror: MirrorProcess
) -> None:
    """Each artifact pulls through with exact bytes; a second pull of its blobs sends nothing upstream."""
    for ref, pushed in artifacts.refs.items():
        if pushed is not artifacts.bundle:
            pull(mirror, pushed, ref.rsplit(":", 1)[1])
    mark = registry.mark()
    for pushed in (artifacts.chart, artifacts.wasm, artifacts.thing):
        pull(mirror, pushed, pushed.digest)
    assert registry.blob_gets(mark) == []
    assert registry.manifest_gets(mark) == []


def test_prefetch_fetches_an_artifacts_blobs(
    artifacts: Artifacts, registry: Registry, mirror: MirrorProcess
) -> None:
    """With prefetch, a chart's manifest miss starts downloading its config and chart layer at once."""
    mark = registry.mark()
    resp = raw_request("GET", f"{mirror.url}/v2/artifacts/chart/manifests/0.1.0", headers=ACCEPT)
    assert resp.status == 200
    wanted = {f"/v2/artifacts/chart/blobs/{d}" for d in artifacts.chart.blobs}
    registry.wait_for(lambda seen: wanted <= {r.route for r in seen if r.method == "GET"}, since=mark)


def test_warmed_artifacts_are_served_with_the_upstream_stopped(
    artifacts: Artifacts, registry: Registry, mirror: MirrorProcess
) -> None:
    """`mirror warm` takes charts, WASM modules and an index of artifacts (no platforms); with the upstream
    stopped they are then all served from the cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    done = subprocess.run(
        [sys.executable, "-m", "mirror", "warm", *artifacts.refs, "--mirror", mirror.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    registry.stop()
    for ref, pushed in artifacts.refs.items():
        pull(mirror, pushed, ref.rsplit(":", 1)[1])
    for child in artifacts.children:
        pull(mirror, child, child.digest)
