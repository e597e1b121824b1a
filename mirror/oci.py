"""Pure values of the distribution spec: digests, repository names, references, media types, platforms.

Every `parse` raises the registry error a client should see for that bad input, so handlers never
build error responses by hand and nothing invalid reaches the upstream.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mirror.errors import DigestInvalid, ManifestUnknown, NameInvalid

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

#: What the mirror asks upstream for when no client Accept applies (e.g. prefetch, warm).
MANIFEST_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

MAX_MANIFEST_BYTES = 4 * 1024 * 1024

DOCKER_IO = "docker.io"
#: Docker Hub's registry API host; the upstream `docker.io` stands for by default.
DOCKER_HUB_HOST = "registry-1.docker.io"
DOCKER_HUB = f"https://{DOCKER_HUB_HOST}"
#: Names clients give Docker Hub; all of them are served by the docker.io upstream.
DOCKER_IO_NAMES = frozenset({DOCKER_IO, "index.docker.io", DOCKER_HUB_HOST})
MAX_NAME_LENGTH = 255

#: One path component of a repository name (also the form of a registry alias).
COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HEX = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}


@dataclass(frozen=True, slots=True)
class Manifest:
    """The exact upstream bytes of a manifest, their digest and media type."""

    body: bytes
    digest: str
    media_type: str


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest `algorithm:hex`; only sha256 and sha512 are accepted."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, hexpart = text.partition(":")
        pattern = _HEX.get(algorithm)
        if not sep or pattern is None or not pattern.fullmatch(hexpart):
            raise DigestInvalid(f"invalid digest {text[:200]!r}")
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of `data`."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def is_digest(reference: str) -> bool:
    """Whether a manifest reference is a digest (contains ':'), not a tag."""
    return ":" in reference


def parse_name(text: str) -> str:
    """A valid repository name, or NAME_INVALID."""
    if len(text) > MAX_NAME_LENGTH or not all(COMPONENT.fullmatch(c) for c in text.split("/")):
        raise NameInvalid(f"invalid repository name {text[:300]!r}")
    return text


def parse_reference(text: str) -> str | Digest:
    """A tag (str) or a Digest, or DIGEST_INVALID for a malformed digest and MANIFEST_UNKNOWN for a
    string that is no valid tag: no manifest can exist under it, and the OCI conformance suite (v1.1.1)
    requires a 404 there (`manifests/.INVALID_MANIFEST_NAME`)."""
    if is_digest(text):
        return Digest.parse(text)
    if not _TAG.fullmatch(text):
        raise ManifestUnknown(f"invalid tag {text[:200]!r}")
    return text


def docker_hub_name(name: str) -> str:
    """Docker Hub's official images live under `library/`: one-component names get it."""
    return name if "/" in name else f"library/{name}"


def accepted_types(accept_headers: list[str]) -> frozenset[str] | None:
    """The manifest media types a client accepts (parameters dropped), or None when it accepts anything.

    Only vendor types (`application/vnd.…`, where every manifest type lives) count: an Accept naming
    none (`text/html`, `application/json`) gets the manifest in its own type, as registries answer it."""
    types: set[str] = set()
    for header in accept_headers:
        for item in header.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type in ("*/*", "application/*"):
                return None
            if media_type.startswith(_VENDOR):
                types.add(media_type)
    return frozenset(types) or None


_VENDOR = "application/vnd."


def admits(accepted: frozenset[str] | None, media_type: str) -> bool:
    """Whether a manifest of `media_type` may be served to a client accepting `accepted`."""
    return accepted is None or media_type in accepted


def sniff_media_type(body: bytes, content_type: str | None) -> str:
    """A manifest's media type: the upstream Content-Type unless generic, else the document's own field."""
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared and declared not in ("application/json", "text/plain", "application/octet-stream"):
        return declared
    try:
        doc = json.loads(body)
    except ValueError:
        return declared or "application/octet-stream"
    media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    if isinstance(media_type, str) and media_type:
        return media_type
    if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
    if isinstance(doc, dict) and "manifests" in doc:
        return OCI_INDEX
    return OCI_MANIFEST if isinstance(doc, dict) and "layers" in doc else declared or "application/json"


def blob_digests(body: bytes) -> list[str]:
    """The valid config and layer digests an image manifest refers to (malformed entries are skipped)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    layers = doc.get("layers")
    entries = [doc.get("config"), *(layers if isinstance(layers, list) else [])]
    found: list[str] = []
    for entry in entries:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if isinstance(digest, str):
            try:
                found.append(str(Digest.parse(digest)))
            except DigestInvalid:
                continue
    return list(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class ImageRef:
    """`[registry/]name[:tag|@digest]` as users write image references (Docker's rules)."""

    registry: str
    name: str
    reference: str

    def __str__(self) -> str:
        sep = "@" if is_digest(self.reference) else ":"
        return f"{self.registry}/{self.name}{sep}{self.reference}"


def parse_image_ref(text: str) -> ImageRef:
    """Parse an image reference; the registry defaults to docker.io (with library/), the tag to latest.

    The first path component is a registry when it has a '.' or ':' or is `localhost`.
    """
    rest, at, digest = text.strip().partition("@")
    first, slash, remainder = rest.partition("/")
    registry = DOCKER_IO
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first.lower(), remainder
    name, colon, tag = rest.rpartition(":") if ":" in rest.rpartition("/")[2] else (rest, "", "")
    reference = str(Digest.parse(digest)) if at else str(parse_reference(tag if colon else "latest"))
    name = parse_name(name)
    if registry in DOCKER_IO_NAMES:
        registry, name = DOCKER_IO, docker_hub_name(name)
    return ImageRef(registry, name, reference)


def platform_names(platform: object) -> tuple[str, ...]:
    """The names an index entry's `platform` answers to: "os/arch", and "os/arch/variant" when it has a
    variant (so "linux/arm" chooses every arm variant, "linux/arm/v7" only v7)."""
    fields = platform if isinstance(platform, dict) else {}
    base = f"{fields.get('os', '')}/{fields.get('architecture', '')}"
    variant = fields.get("variant")
    return (base, f"{base}/{variant}") if isinstance(variant, str) and variant else (base,)


def platform_filter(chosen: tuple[str, ...] | list[str]) -> frozenset[str] | None:
    """The platforms a list of `os/arch[/variant]` names chooses; None (every platform) if it says `all`."""
    return None if "all" in chosen else frozenset(chosen)


def select_children(index_body: bytes, platforms: frozenset[str] | None) -> list[str]:
    """Digests of an index's manifests for `platforms` ("os/arch" or "os/arch/variant"; None for all),
    in index order. An entry without a `platform` is no platform image (an artifact: a chart, a WASM
    module, an SBOM) and is chosen whatever the platforms."""
    try:
        doc = json.loads(index_body)
    except ValueError:
        return []
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    found: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        names = platform_names(entry.get("platform"))
        if names[0] == "unknown/unknown":  # buildx attestation manifests, not a platform image
            continue
        if platforms is None or "platform" not in entry or not platforms.isdisjoint(names):
            try:
                found.append(str(Digest.parse(entry["digest"])))
            except DigestInvalid:
                continue
    return list(dict.fromkeys(found))


def parse_tag_list(body: bytes) -> list[str] | None:
    """The tags of a `tags/list` document, or None when it is no such document."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    tags = doc.get("tags") if isinstance(doc, dict) else None
    if tags is None and isinstance(doc, dict) and "name" in doc:
        return []  # distribution answers `"tags": null` for a repository without tags
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None
    return tags


def tag_page(tags: Iterable[str], n: int | None, last: str | None) -> tuple[list[str], str | None]:
    """One page of a tag list as the spec pages it: sorted, after `last`, at most `n`; and the `last`
    of the next page when more remain."""
    ordered = sorted(set(tags))
    if last is not None:
        ordered = [t for t in ordered if t > last]
    if n is None or len(ordered) <= n:
        return ordered, None
    page = ordered[:n]
    return page, page[-1] if page else None


def rebase_link(link: str, upstream_path: str, client_path: str) -> str:
    """A `Link` header naming the upstream's `upstream_path` (`/v2/owner/app/tags/list?...`), pointed
    at the path the client asked instead (`/v2/ghcr.io/owner/app/tags/list?...`), so that following it
    reaches the same upstream through the mirror."""
    return link.replace(f"<{upstream_path}?", f"<{client_path}?").replace(
        f"<{upstream_path}>", f"<{client_path}>"
    )
