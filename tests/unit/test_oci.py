"""Unit tests for mirror.oci: digests, repository names, references, Accept handling, media-type sniffing."""

from __future__ import annotations

import hashlib
import json

import pytest

import mirror.oci as oci_module
from mirror import oci
from mirror.errors import DigestInvalid, ManifestUnknown, NameInvalid
from mirror.oci import Digest

SHA256_HEX = hashlib.sha256(b"hello").hexdigest()
SHA512_HEX = hashlib.sha512(b"hello").hexdigest()


# --- Digest.parse -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "algorithm", "hexpart"),
    [
        (f"sha256:{SHA256_HEX}", "sha256", SHA256_HEX),
        (f"sha512:{SHA512_HEX}", "sha512", SHA512_HEX),
        ("sha256:" + "0" * 64, "sha256", "0" * 64),
    ],
)
def test_digest_parse_accepts_valid(text: str, algorithm: str, hexpart: str) -> None:
    """A well-formed sha256 or sha512 digest parses into its algorithm and hex parts."""
    digest = Digest.parse(text)
    assert (digest.algorithm, digest.hex) == (algorithm, hexpart)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("sha256:" + "a" * 63, id="sha256-too-short"),
        pytest.param("sha256:" + "a" * 65, id="sha256-too-long"),
        pytest.param("sha512:" + "a" * 64, id="sha512-with-sha256-length"),
        pytest.param("sha256:" + SHA256_HEX.upper(), id="uppercase-hex"),
        pytest.param("sha256:" + "g" * 64, id="non-hex"),
        pytest.param("md5:" + "a" * 32, id="unknown-algorithm"),
        pytest.param("SHA256:" + SHA256_HEX, id="uppercase-algorithm"),
        pytest.param(SHA256_HEX, id="missing-colon"),
        pytest.param("sha256" + SHA256_HEX, id="missing-colon-with-algorithm"),
        pytest.param("", id="empty"),
        pytest.param("sha256:", id="empty-hex"),
        pytest.param(":" + SHA256_HEX, id="empty-algorithm"),
        pytest.param(f"sha256:{SHA256_HEX}\n", id="trailing-newline"),
        pytest.param(f" sha256:{SHA256_HEX}", id="leading-space"),
    ],
)
def test_digest_parse_rejects_invalid(text: str) -> None:
    """A malformed digest raises DIGEST_INVALID."""
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


def test_digest_parse_error_is_a_400_digest_invalid() -> None:
    """The error raised for a bad digest carries the DIGEST_INVALID code and HTTP 400."""
    with pytest.raises(DigestInvalid) as info:
        Digest.parse("nope")
    assert (info.value.code, info.value.status) == ("DIGEST_INVALID", 400)


def test_digest_str_round_trips() -> None:
    """str() of a parsed digest is the original `algorithm:hex` text."""
    text = f"sha256:{SHA256_HEX}"
    assert str(Digest.parse(text)) == text


# --- Digest.of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "algorithm", "expected"),
    [
        (b"hello", "sha256", hashlib.sha256(b"hello").hexdigest()),
        (b"", "sha256", hashlib.sha256(b"").hexdigest()),
        (b"hello", "sha512", hashlib.sha512(b"hello").hexdigest()),
    ],
)
def test_digest_of_hashes_data(data: bytes, algorithm: str, expected: str) -> None:
    """Digest.of computes the digest of the bytes with the requested algorithm."""
    assert Digest.of(data, algorithm) == Digest(algorithm, expected)


def test_digest_of_defaults_to_sha256() -> None:
    """Digest.of uses sha256 when no algorithm is given."""
    assert str(Digest.of(b"hello")) == f"sha256:{SHA256_HEX}"


def test_digest_hasher_is_fresh_hash_of_same_algorithm() -> None:
    """hasher() returns a new hash object whose result matches Digest.of for the same bytes."""
    hasher = Digest.parse(f"sha512:{SHA512_HEX}").hasher()
    hasher.update(b"hello")
    assert hasher.hexdigest() == SHA512_HEX


# --- parse_name ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "alpine",
        "library/alpine",
        "a",
        "0",
        "my.org/team_x/app__v2",
        "a-b",
        "a--b",
        "a---b",
        "a.b",
        "a_b",
        "a__b",
        "a/b/c/d/e",
        "x" * 255,
        "/".join(["abc"] * 63) + "/ab1",  # 63 * 4 + 3 = 255 characters
    ],
)
def test_parse_name_accepts_valid(name: str) -> None:
    """A repository name made of valid components is returned unchanged."""
    assert oci.parse_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Alpine", id="uppercase"),
        pytest.param("library/Alpine", id="uppercase-second-component"),
        pytest.param("", id="empty"),
        pytest.param("a//b", id="empty-component"),
        pytest.param("/alpine", id="leading-slash"),
        pytest.param("alpine/", id="trailing-slash"),
        pytest.param("-alpine", id="leading-dash"),
        pytest.param("alpine-", id="trailing-dash"),
        pytest.param(".alpine", id="leading-dot"),
        pytest.param("alpine.", id="trailing-dot"),
        pytest.param("_alpine", id="leading-underscore"),
        pytest.param("alpine_", id="trailing-underscore"),
        pytest.param("a..b", id="double-dot"),
        pytest.param("..", id="dot-dot"),
        pytest.param("a/../b", id="dot-dot-component"),
        pytest.param("a___b", id="triple-underscore"),
        pytest.param("a._b", id="mixed-separators"),
        pytest.param("a b", id="space"),
        pytest.param("a:b", id="colon"),
        pytest.param("x" * 256, id="256-chars"),
        pytest.param("/".join(["abc"] * 65), id="259-chars-of-valid-components"),
    ],
)
def test_parse_name_rejects_invalid(name: str) -> None:
    """An invalid repository name raises NAME_INVALID."""
    with pytest.raises(NameInvalid):
        oci.parse_name(name)


# --- parse_reference ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        "latest",
        "3.19",
        "v1.0.0-rc.1",
        "_private",
        "UPPER_case",
        "0",
        "a" * 128,
        "a" + "." * 127,
    ],
)
def test_parse_reference_accepts_tags(tag: str) -> None:
    """A valid tag (up to 128 characters) is returned as the same string."""
    assert oci.parse_reference(tag) == tag


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param("a" * 129, id="129-chars"),
        pytest.param(".latest", id="leading-dot"),
        pytest.param("-latest", id="leading-dash"),
        pytest.param("", id="empty"),
        pytest.param("la test", id="space"),
        pytest.param("tag/x", id="slash"),
        pytest.param("tag+x", id="plus"),
    ],
)
def test_parse_reference_rejects_bad_tags(tag: str) -> None:
    """An invalid tag raises MANIFEST_UNKNOWN (404: nothing can exist under it)."""
    with pytest.raises(ManifestUnknown):
        oci.parse_reference(tag)


def test_parse_reference_returns_digest_for_digest() -> None:
    """A reference containing ':' is parsed as a Digest."""
    assert oci.parse_reference(f"sha256:{SHA256_HEX}") == Digest("sha256", SHA256_HEX)


def test_parse_reference_rejects_bad_digest() -> None:
    """A reference containing ':' that is not a valid digest raises DIGEST_INVALID."""
    with pytest.raises(DigestInvalid):
        oci.parse_reference("sha256:short")


# --- docker_hub_name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpine", "library/alpine"),
        ("library/alpine", "library/alpine"),
        ("bitnami/redis", "bitnami/redis"),
        ("a/b/c", "a/b/c"),
    ],
)
def test_docker_hub_name(name: str, expected: str) -> None:
    """One-component names get Docker Hub's `library/` prefix; others are unchanged."""
    assert oci.docker_hub_name(name) == expected


# --- accepted_types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([oci.OCI_MANIFEST], frozenset({oci.OCI_MANIFEST}), id="single"),
        pytest.param(
            [f"{oci.OCI_MANIFEST}, {oci.DOCKER_MANIFEST}"],
            frozenset({oci.OCI_MANIFEST, oci.DOCKER_MANIFEST}),
            id="comma-list",
        ),
        pytest.param(
            [f"{oci.OCI_INDEX};q=0.5, {oci.OCI_MANIFEST} ; q=0.9"],
            frozenset({oci.OCI_INDEX, oci.OCI_MANIFEST}),
            id="parameters-dropped",
        ),
        pytest.param(
            [oci.OCI_MANIFEST, oci.DOCKER_MANIFEST_LIST],
            frozenset({oci.OCI_MANIFEST, oci.DOCKER_MANIFEST_LIST}),
            id="multiple-headers",
        ),
        pytest.param(
            ["Application/VND.OCI.Image.Manifest.v1+JSON"], frozenset({oci.OCI_MANIFEST}), id="lowercased"
        ),
        pytest.param([f"{oci.OCI_MANIFEST},,  ,"], frozenset({oci.OCI_MANIFEST}), id="empty-items-skipped"),
        pytest.param([f"{oci.OCI_MANIFEST}, */*"], None, id="star-star"),
        pytest.param([oci.OCI_MANIFEST, "*/*;q=0.1"], None, id="star-star-in-second-header"),
        pytest.param(["application/*"], None, id="application-star"),
        pytest.param([], None, id="no-headers"),
        pytest.param([""], None, id="empty-header"),
        pytest.param([" , "], None, id="only-separators"),
        pytest.param(["text/html"], None, id="no-manifest-type"),
        pytest.param(["application/json, text/plain"], None, id="generic-types-only"),
        pytest.param(
            [f"text/html, {oci.OCI_MANIFEST}"], frozenset({oci.OCI_MANIFEST}), id="generic-types-dropped"
        ),
    ],
)
def test_accepted_types(headers: list[str], expected: frozenset[str] | None) -> None:
    """Accept headers become a set of bare media types, or None when anything is accepted."""
    assert oci.accepted_types(headers) == expected


# --- admits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accepted", "media_type", "expected"),
    [
        (None, oci.DOCKER_SCHEMA1, True),
        (frozenset({oci.OCI_MANIFEST}), oci.OCI_MANIFEST, True),
        (frozenset({oci.OCI_MANIFEST}), oci.DOCKER_MANIFEST, False),
        (frozenset({oci.OCI_MANIFEST, oci.OCI_INDEX}), oci.OCI_INDEX, True),
    ],
)
def test_admits(accepted: frozenset[str] | None, media_type: str, expected: bool) -> None:
    """A manifest is admitted when the client accepts anything or lists its media type."""
    assert oci.admits(accepted, media_type) is expected


# --- sniff_media_type ---------------------------------------------------------------------------


def _doc(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param(
            _doc(mediaType=oci.OCI_MANIFEST, layers=[]),
            oci.DOCKER_MANIFEST,
            oci.DOCKER_MANIFEST,
            id="declared-specific-wins-over-field",
        ),
        pytest.param(
            b"not json", oci.OCI_INDEX, oci.OCI_INDEX, id="declared-specific-wins-even-for-invalid-json"
        ),
        pytest.param(
            _doc(mediaType=oci.OCI_MANIFEST),
            f"{oci.DOCKER_MANIFEST}; charset=utf-8",
            oci.DOCKER_MANIFEST,
            id="declared-parameters-dropped",
        ),
        pytest.param(
            _doc(mediaType=oci.DOCKER_MANIFEST_LIST, manifests=[]),
            "application/json",
            oci.DOCKER_MANIFEST_LIST,
            id="generic-json-falls-back-to-field",
        ),
        pytest.param(
            _doc(mediaType=oci.OCI_MANIFEST),
            "application/json; charset=utf-8",
            oci.OCI_MANIFEST,
            id="generic-json-with-params-falls-back",
        ),
        pytest.param(
            _doc(mediaType=oci.OCI_MANIFEST), "text/plain", oci.OCI_MANIFEST, id="text-plain-is-generic"
        ),
        pytest.param(
            _doc(mediaType=oci.OCI_MANIFEST),
            "application/octet-stream",
            oci.OCI_MANIFEST,
            id="octet-stream-is-generic",
        ),
        pytest.param(_doc(mediaType=oci.OCI_INDEX), None, oci.OCI_INDEX, id="no-content-type-uses-field"),
        pytest.param(_doc(mediaType=oci.OCI_INDEX), "", oci.OCI_INDEX, id="empty-content-type-uses-field"),
        pytest.param(
            _doc(schemaVersion=1, fsLayers=[], signatures=[{}]),
            "application/json",
            oci.DOCKER_SCHEMA1_SIGNED,
            id="schema1-signed",
        ),
        pytest.param(_doc(schemaVersion=1, fsLayers=[]), None, oci.DOCKER_SCHEMA1, id="schema1-unsigned"),
        pytest.param(
            _doc(schemaVersion=2, manifests=[]), "application/json", oci.OCI_INDEX, id="index-no-media-type"
        ),
        pytest.param(
            _doc(schemaVersion=2, config={}, layers=[]), None, oci.OCI_MANIFEST, id="manifest-no-media-type"
        ),
        pytest.param(
            _doc(mediaType=5, manifests=[]), None, oci.OCI_INDEX, id="non-string-media-type-ignored"
        ),
        pytest.param(_doc(mediaType="", layers=[]), None, oci.OCI_MANIFEST, id="empty-media-type-ignored"),
        pytest.param(b"{not json", "application/json", "application/json", id="invalid-json-declared"),
        pytest.param(b"{not json", None, "application/octet-stream", id="invalid-json-undeclared"),
        pytest.param(b"\xff\xfe\x00", None, "application/octet-stream", id="non-utf8-undeclared"),
        pytest.param(b"[1, 2]", None, "application/json", id="json-array"),
        pytest.param(_doc(schemaVersion=2), "text/plain", "text/plain", id="unknown-doc-keeps-declared"),
        pytest.param(_doc(schemaVersion=2), None, "application/json", id="unknown-doc-undeclared"),
    ],
)
def test_sniff_media_type(body: bytes, content_type: str | None, expected: str) -> None:
    """A manifest's media type comes from a specific Content-Type, else from the document itself."""
    assert oci.sniff_media_type(body, content_type) == expected


def test_sniff_media_type_generic_content_type_is_case_insensitive() -> None:
    """A generic Content-Type in another letter case still falls back to the document's mediaType."""
    assert oci.sniff_media_type(_doc(mediaType=oci.OCI_MANIFEST), "Application/JSON") == oci.OCI_MANIFEST


def test_select_children_by_platform_skips_attestations() -> None:
    """Index children are chosen by os/arch; buildx attestation entries (unknown/unknown) never are."""

    def entry(digit: str, os_: str, arch: str) -> dict[str, object]:
        return {"digest": "sha256:" + digit * 64, "platform": {"os": os_, "architecture": arch}}

    body = json.dumps(
        {
            "manifests": [
                entry("a", "linux", "amd64"),
                entry("b", "linux", "arm64"),
                entry("c", "unknown", "unknown"),
            ]
        }
    ).encode()
    assert oci_module.select_children(body, frozenset({"linux/arm64"})) == ["sha256:" + "b" * 64]
    assert oci_module.select_children(body, None) == ["sha256:" + "a" * 64, "sha256:" + "b" * 64]


def test_select_children_tells_variants_apart() -> None:
    """ "linux/arm/v7" chooses only the v7 child; "linux/arm" every arm variant; "linux/arm64" the arm64
    child whatever variant it declares."""

    def entry(digit: str, arch: str, variant: str | None = None) -> dict[str, object]:
        platform = {"os": "linux", "architecture": arch} | ({"variant": variant} if variant else {})
        return {"digest": "sha256:" + digit * 64, "platform": platform}

    body = json.dumps(
        {"manifests": [entry("a", "arm", "v6"), entry("b", "arm", "v7"), entry("c", "arm64", "v8")]}
    ).encode()
    assert oci_module.select_children(body, frozenset({"linux/arm/v7"})) == ["sha256:" + "b" * 64]
    assert oci_module.select_children(body, frozenset({"linux/arm"})) == [
        "sha256:" + "a" * 64,
        "sha256:" + "b" * 64,
    ]
    assert oci_module.select_children(body, frozenset({"linux/arm64"})) == ["sha256:" + "c" * 64]
    assert oci_module.select_children(body, frozenset({"linux/arm/v5"})) == []


def test_select_children_keeps_entries_without_platform() -> None:
    """An index entry without `platform` (an artifact) is chosen whatever the platforms asked for."""
    entries = [
        {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1},
        {
            "mediaType": oci.OCI_MANIFEST,
            "digest": "sha256:" + "b" * 64,
            "size": 1,
            "platform": {"os": "linux", "architecture": "arm64"},
        },
    ]
    body = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    assert oci_module.select_children(body, frozenset({"linux/amd64"})) == ["sha256:" + "a" * 64]


# --- tag lists ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"name": "a", "tags": ["1", "2"]}', ["1", "2"]),
        (b'{"name": "a", "tags": null}', []),
        (b'{"name": "a", "tags": [1]}', None),
        (b'{"tags": "1"}', None),
        (b"[]", None),
        (b"<html>", None),
    ],
)
def test_parse_tag_list(body: bytes, expected: list[str] | None) -> None:
    """A tags/list document gives its tags (none for `null`); anything else gives None."""
    assert oci.parse_tag_list(body) == expected


@pytest.mark.parametrize(
    ("n", "last", "page", "next_last"),
    [
        (None, None, ["a", "b", "c"], None),
        (2, None, ["a", "b"], "b"),
        (2, "b", ["c"], None),
        (3, None, ["a", "b", "c"], None),
        (None, "a", ["b", "c"], None),
        (0, None, [], None),
    ],
)
def test_tag_page_pages_like_the_spec(
    n: int | None, last: str | None, page: list[str], next_last: str | None
) -> None:
    """Tags are sorted, start after `last`, hold at most `n`, and name the next page's `last`."""
    assert oci.tag_page(["c", "a", "b", "a"], n, last) == (page, next_last)


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (
            '</v2/owner/app/tags/list?last=b&n=2>; rel="next"',
            '</v2/ghcr.io/owner/app/tags/list?last=b&n=2>; rel="next"',
        ),
        ('</v2/owner/app/tags/list>; rel="next"', '</v2/ghcr.io/owner/app/tags/list>; rel="next"'),
        ('</v2/other/tags/list?n=1>; rel="next"', '</v2/other/tags/list?n=1>; rel="next"'),
    ],
)
def test_rebase_link_points_at_the_clients_path(link: str, expected: str) -> None:
    """An upstream tag list Link naming the upstream's path is pointed at the client's path."""
    assert oci.rebase_link(link, "/v2/owner/app/tags/list", "/v2/ghcr.io/owner/app/tags/list") == expected
