"""The referrers list of OCI distribution 1.1, as a document: pure, no I/O.

`GET /v2/<name>/referrers/<digest>` answers an OCI image index whose `manifests` are descriptors of the
manifests that name `<digest>` as their `subject`. A registry without that API (Docker Hub, distribution
2.8) keeps the same descriptors in an index under the fallback tag `<alg>-<hex>`. Either way the mirror
keeps the merged, unfiltered descriptors and filters by `artifactType` itself on the way out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from mirror import oci
from mirror.errors import DigestInvalid

#: The `OCI-Filters-Applied` value of an answer the mirror filtered by `artifactType`.
ARTIFACT_TYPE_FILTER = "artifactType"
#: The fallback tag schema truncates the digest's hex to this many characters.
FALLBACK_HEX = 64
_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)

Descriptor = dict[str, Any]


def fallback_tag(digest: oci.Digest) -> str:
    """The tag under which a registry without the referrers API keeps `digest`'s referrers."""
    return f"{digest.algorithm}-{digest.hex[:FALLBACK_HEX]}"


def descriptors(body: bytes) -> list[Descriptor] | None:
    """The well-formed descriptors of an index document, or None when `body` is no index at all.
    An entry without a string media type, a valid digest and a whole size is dropped."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return None
    return [entry for entry in entries if _well_formed(entry)]


def _well_formed(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("mediaType"), str):
        return False
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return False
    try:
        oci.Digest.parse(str(entry.get("digest")))
    except DigestInvalid:
        return False
    return True


def merge(pages: Iterable[list[Descriptor]]) -> list[Descriptor]:
    """The descriptors of every page in order, each digest once (the first occurrence wins)."""
    seen: set[str] = set()
    merged: list[Descriptor] = []
    for page in pages:
        for entry in page:
            if entry["digest"] not in seen:
                seen.add(entry["digest"])
                merged.append(entry)
    return merged


def filtered(entries: list[Descriptor], artifact_type: str | None) -> list[Descriptor]:
    """The entries whose `artifactType` is `artifact_type` (all of them for None)."""
    if artifact_type is None:
        return entries
    return [entry for entry in entries if entry.get("artifactType") == artifact_type]


def index(entries: list[Descriptor]) -> bytes:
    """The referrers answer: an OCI image index over `entries` (empty when there are none)."""
    doc = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": entries}
    return json.dumps(doc, separators=(",", ":")).encode()


def next_page(link: str | None) -> str | None:
    """The URL of the next page named by a `Link` header (`<url>; rel="next"`), if any."""
    found = _NEXT.search(link or "")
    return found.group(1) if found else None
