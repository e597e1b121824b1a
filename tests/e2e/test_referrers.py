"""The referrers API through the mirror in front of a real distribution 2.8 (which has no referrers API):
built from the fallback tag `sha256-<hex>`, filtered, empty for an unsigned image, served while the
upstream is down; the referrer manifests and their blobs pulled by digest like any others."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.artifacts import (
    COSIGN_PAYLOAD,
    COSIGN_SIG,
    EMPTY_DATA,
    EMPTY_TYPE,
    SPDX,
    Pushed,
    push_artifact,
    push_fallback_index,
    push_image,
)
from tests.support.digests import sha256
from tests.support.images import OCI_INDEX
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import HttpResponse, raw_request
from tests.support.registry import Registry

NAME = "team/signed"


@dataclass(frozen=True)
class Signed:
    """An image with a signature and an SBOM referring to it, and an image nothing refers to."""

    image: Pushed
    signature: Pushed
    sbom: Pushed
    unsigned: Pushed


@pytest.fixture
def registry(make_registry: Callable[..., Registry]) -> Registry:
    """A private upstream (the tests stop it)."""
    return make_registry()


@pytest.fixture
def signed(registry: Registry) -> Signed:
    """Seed the upstream as cosign and an SBOM tool do against a registry without the referrers API."""
    image = push_image(registry, NAME, "1.0", seed=1)
    unsigned = push_image(registry, NAME, "2.0", seed=2)
    payload = json.dumps({"critical": {"image": {"docker-manifest-digest": image.digest}}}).encode()
    signature = push_artifact(
        registry,
        NAME,
        None,
        config=(EMPTY_TYPE, EMPTY_DATA),
        layers=[(COSIGN_PAYLOAD, payload)],
        artifact_type=COSIGN_SIG,
        subject=image,
        annotations={"dev.cosignproject.cosign/signature": "MEUCIQ=="},
    )
    sbom = push_artifact(
        registry,
        NAME,
        None,
        config=(EMPTY_TYPE, EMPTY_DATA),
        layers=[(SPDX, b'{"spdxVersion": "SPDX-2.3", "name": "signed"}')],
        artifact_type=SPDX,
        subject=image,
    )
    push_fallback_index(registry, image, [signature, sbom])
    return Signed(image, signature, sbom, unsigned)


@pytest.fixture
def mirror(tmp_path: Path, registry: Registry) -> Iterator[MirrorProcess]:
    """A mirror that revalidates referrers lists on every request (referrers_ttl 0)."""
    with MirrorProcess(tmp_path / "mirror", registry.url, env={"MIRROR_REFERRERS_TTL": "0"}) as proc:
        yield proc


def referrers(mirror: MirrorProcess, subject: Pushed, artifact_type: str | None = None) -> HttpResponse:
    query = f"?artifactType={urllib.parse.quote(artifact_type, safe='')}" if artifact_type else ""
    return raw_request("GET", f"{mirror.url}/v2/{NAME}/referrers/{subject.digest}{query}")


def listed(resp: HttpResponse) -> list[str]:
    """The digests of a referrers answer, after checking it is a 200 OCI index."""
    assert resp.status == 200, resp.body[:300]
    assert resp.headers["content-type"].startswith(OCI_INDEX)
    doc = resp.json()
    assert isinstance(doc, dict)
    assert (doc["schemaVersion"], doc["mediaType"]) == (2, OCI_INDEX)
    return [m["digest"] for m in doc["manifests"]]


def test_referrers_list_holds_signature_and_sbom(
    signed: Signed, registry: Registry, mirror: MirrorProcess
) -> None:
    """The list is built from the fallback tag: both referrers, with their artifactType."""
    mark = registry.mark()
    resp = referrers(mirror, signed.image)
    assert listed(resp) == [signed.signature.digest, signed.sbom.digest]
    doc = resp.json()
    assert isinstance(doc, dict)
    assert [m["artifactType"] for m in doc["manifests"]] == [COSIGN_SIG, SPDX]
    asked = [(r.method, r.route, r.status) for r in registry.requests(mark)]
    assert ("GET", f"/v2/{NAME}/referrers/{signed.image.digest}", 404) in asked
    assert ("GET", f"/v2/{NAME}/manifests/{signed.image.digest.replace(':', '-')}", 200) in asked


def test_artifact_type_filter_keeps_one(signed: Signed, mirror: MirrorProcess) -> None:
    """`?artifactType=` keeps the signature only, and the answer says the filter was applied."""
    resp = referrers(mirror, signed.image, COSIGN_SIG)
    assert listed(resp) == [signed.signature.digest]
    assert resp.headers["oci-filters-applied"] == "artifactType"


def test_unsigned_image_gets_an_empty_index(signed: Signed, mirror: MirrorProcess) -> None:
    """An image nothing refers to gets 200 and an empty index, not a 404."""
    assert listed(referrers(mirror, signed.unsigned)) == []


def test_referrer_manifests_and_blobs_pull_by_digest(signed: Signed, mirror: MirrorProcess) -> None:
    """A referrer (a manifest with `subject`) and its blobs are served by digest with exact bytes."""
    for pushed in (signed.signature, signed.sbom):
        resp = raw_request(
            "GET", f"{mirror.url}/v2/{NAME}/manifests/{pushed.digest}", headers={"Accept": pushed.media_type}
        )
        assert (resp.status, resp.body, resp.headers["docker-content-digest"]) == (
            200,
            pushed.manifest,
            pushed.digest,
        )
        for digest, data in pushed.blobs.items():
            blob = raw_request("GET", f"{mirror.url}/v2/{NAME}/blobs/{digest}")
            assert (blob.status, sha256(blob.body)) == (200, digest)
            assert blob.body == data


def test_answers_survive_the_upstream_stopping(
    signed: Signed, registry: Registry, mirror: MirrorProcess
) -> None:
    """With the upstream stopped, every list asked before is still served (stale), filters included."""
    full, unsigned = listed(referrers(mirror, signed.image)), listed(referrers(mirror, signed.unsigned))
    registry.stop()
    for _ in range(4):  # past the breaker's threshold too
        assert listed(referrers(mirror, signed.image)) == full
        assert listed(referrers(mirror, signed.image, SPDX)) == [signed.sbom.digest]
        assert listed(referrers(mirror, signed.unsigned)) == unsigned == []
    assert any('"referrers_served_stale"' in line for line in mirror.log_lines())
