"""Unit tests for mirror.referrers: the referrers list document, its filter, merge and paging."""

from __future__ import annotations

import json

import pytest

from mirror import oci, referrers

SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def entry(digest: str, artifact_type: str | None = SIG, size: object = 10) -> dict[str, object]:
    found: dict[str, object] = {"mediaType": oci.OCI_MANIFEST, "digest": digest, "size": size}
    if artifact_type is not None:
        found["artifactType"] = artifact_type
    return found


def index_of(*entries: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": list(entries)}).encode()


@pytest.mark.parametrize(
    ("digest", "tag"),
    [
        ("sha256:" + "ab" * 32, "sha256-" + "ab" * 32),
        ("sha512:" + "cd" * 64, "sha512-" + "cd" * 32),
    ],
)
def test_fallback_tag_follows_the_tag_schema(digest: str, tag: str) -> None:
    """The fallback tag is `<alg>-<hex>`, the hex cut to 64 characters (a valid tag for sha512 too)."""
    assert referrers.fallback_tag(oci.Digest.parse(digest)) == tag
    assert oci.parse_reference(tag) == tag


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (index_of(entry(D1), entry(D2, SBOM)), [entry(D1), entry(D2, SBOM)]),
        (index_of(), []),
        (
            index_of(entry(D1), "junk", entry("sha256:short"), entry(D2, size=-1), entry(D3, size=True)),
            [entry(D1)],
        ),
        (index_of({"digest": D1, "size": 1}), []),
        (b'{"schemaVersion": 2, "layers": []}', None),
        (b"[]", None),
        (b"not json", None),
    ],
)
def test_descriptors_keeps_well_formed_entries(body: bytes, expected: list[object] | None) -> None:
    """An index's well-formed descriptors are kept, malformed ones dropped; a non-index gives None."""
    assert referrers.descriptors(body) == expected


def test_merge_keeps_order_and_first_of_each_digest() -> None:
    """Pages merge in order and a digest listed twice appears once."""
    merged = referrers.merge([[entry(D1), entry(D2)], [entry(D2, SBOM), entry(D3)]])
    assert merged == [entry(D1), entry(D2), entry(D3)]


@pytest.mark.parametrize(
    ("artifact_type", "expected"),
    [(None, [D1, D2, D3]), (SIG, [D1, D3]), (SBOM, [D2]), ("application/other", [])],
)
def test_filtered_by_artifact_type(artifact_type: str | None, expected: list[str]) -> None:
    """Filtering keeps the entries of the artifact type asked for (all without a filter)."""
    entries = [entry(D1), entry(D2, SBOM), entry(D3)]
    assert [e["digest"] for e in referrers.filtered(entries, artifact_type)] == expected


def test_filter_drops_entries_without_artifact_type() -> None:
    """An entry without `artifactType` matches no filter."""
    assert referrers.filtered([entry(D1, None)], SIG) == []


def test_index_is_an_oci_index() -> None:
    """The answer is an OCI image index (schemaVersion 2, mediaType), empty when nothing refers."""
    assert json.loads(referrers.index([])) == {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [],
    }
    assert referrers.descriptors(referrers.index([entry(D1)])) == [entry(D1)]


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ('</v2/a/referrers/x?last=1>; rel="next"', "/v2/a/referrers/x?last=1"),
        ("<http://h/v2/a/referrers/x?p=2>; rel=next", "http://h/v2/a/referrers/x?p=2"),
        ('<http://h/first>; rel="prev", </second>; rel="next"', "/second"),
        ('</v2/a>; rel="prev"', None),
        ("", None),
        (None, None),
    ],
)
def test_next_page_reads_link_header(link: str | None, expected: str | None) -> None:
    """The next page is the `Link` entry with rel="next"."""
    assert referrers.next_page(link) == expected
