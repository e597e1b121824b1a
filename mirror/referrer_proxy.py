"""ReferrerProxy: the cache-or-fetch policy of the referrers API (`/v2/<name>/referrers/<digest>`).

The list comes from the upstream's referrers API, its `Link` pages followed and merged; where the
upstream has none (Docker Hub, distribution 2.8) from the index under the fallback tag `sha256-<hex>`,
so clients get one answer shape whatever the upstream, and an empty index when nothing refers to the
digest. It is cached like a tag: served within `ttl`, then revalidated (a HEAD of the fallback tag, free
against Docker Hub's pull limit; the API list fetched again), and served stale when the upstream fails.
`artifactType` filtering is the mirror's own, on the cached, unfiltered list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from mirror import errors, oci, referrers
from mirror.proxy import STALE_ON
from mirror.singleflight import SingleFlight
from mirror.storage.listings import Listing, ListingCache
from mirror.upstream.client import UpstreamClient

log = structlog.get_logger("mirror.referrers")
KIND = "referrers"
#: Pages of an upstream referrers list followed at most: a longer chain is refused, not followed forever.
MAX_PAGES = 32
#: Seconds after an upstream answered 404/405 for the referrers route during which the mirror reads the
#: fallback tag directly, instead of asking that route again for every subject; after it the route is
#: tried again, in case the upstream gained the API (an upgrade of the registry).
API_RETRY_SECONDS = 300.0
_API = "api"
_TAG = "tag:"  # + the fallback tag's digest, empty when the tag does not exist


@dataclass(frozen=True, slots=True)
class ReferrersAnswer:
    body: bytes  # the OCI index to send
    filtered: bool  # whether artifactType filtering was applied (OCI-Filters-Applied)
    result: str  # hit | miss | coalesced | revalidated | stale


class ReferrerProxy:
    """Referrers lists of one upstream; names are the upstream's own (routed)."""

    def __init__(self, upstream: UpstreamClient, listings: ListingCache, ttl: float) -> None:
        self.upstream = upstream
        self._listings = listings
        self._ttl = ttl
        self._flights: SingleFlight[tuple[Listing, str]] = SingleFlight()
        self._no_api_until = 0.0  # monotonic: until then, go straight to the fallback tag

    @property
    def label(self) -> str:
        return self.upstream.label

    async def referrers(self, name: str, digest: oci.Digest, artifact_type: str | None) -> ReferrersAnswer:
        """The referrers of `digest` in repository `name`, of `artifact_type` only when given."""
        key = str(digest)
        cached = await self._listings.get(KIND, self.label, name, key)
        if cached is not None and (cached.fresh(self._ttl) or self.upstream.health.budget_low()):
            listing, result = cached, "hit"
        elif cached is not None:
            listing, result = await self._revalidate(name, digest, cached)
        else:
            (listing, result), joined = await self._flights.run(
                ("get", name, key), lambda: self._fetch(name, digest)
            )
            result = "coalesced" if joined else result
        entries = referrers.descriptors(listing.body) or []
        chosen = referrers.filtered(entries, artifact_type)
        return ReferrersAnswer(referrers.index(chosen), artifact_type is not None, result)

    async def _revalidate(self, name: str, digest: oci.Digest, cached: Listing) -> tuple[Listing, str]:
        key = ("revalidate", name, str(digest))
        if self._flights.busy(key):  # another request is revalidating: don't queue behind it
            return cached, "stale"

        async def revalidate() -> tuple[Listing, str]:
            try:
                if cached.validator.startswith(_TAG) and await self._tag_unchanged(name, digest, cached):
                    confirmed = await self._listings.confirm(KIND, self.label, name, str(digest), cached)
                    return confirmed, "revalidated"
                listing, _ = await self._fetch(name, digest)
            except STALE_ON as exc:
                log.warning(
                    "referrers_served_stale", upstream=self.label, digest=str(digest), reason=str(exc)
                )
                return cached, "stale"
            return listing, "revalidated" if listing.body == cached.body else "miss"

        answer, _ = await self._flights.run(key, revalidate)
        return answer

    async def _tag_unchanged(self, name: str, digest: oci.Digest, cached: Listing) -> bool:
        """Whether the fallback tag still names what `cached` was built from (one HEAD)."""
        tag = referrers.fallback_tag(digest)
        try:
            head = await self.upstream.head_manifest(name, tag, [oci.OCI_INDEX])
        except (errors.ManifestUnknown, errors.NameUnknown):
            return cached.validator == _TAG
        return head is not None and cached.validator == _TAG + head.digest

    async def _fetch(self, name: str, digest: oci.Digest) -> tuple[Listing, str]:
        """The list from upstream (its API, else its fallback tag), stored."""
        listing = None
        if time.monotonic() >= self._no_api_until:
            listing = await self._from_api(name, digest)
            if listing is None:
                self._no_api_until = time.monotonic() + API_RETRY_SECONDS
        if listing is None:
            listing = await self._from_fallback_tag(name, digest)
        await self._listings.put(KIND, self.label, name, str(digest), listing)
        return listing, "miss"

    async def _from_api(self, name: str, digest: oci.Digest) -> Listing | None:
        pages: list[list[referrers.Descriptor]] = []
        link: str | None = None
        for _ in range(MAX_PAGES):
            page = await self.upstream.referrers_page(name, str(digest), link)
            if page is None:
                if pages:
                    raise errors.UpstreamBadGateway("a referrers page named by Link answered 404")
                return None
            entries = referrers.descriptors(page.body)
            if entries is None:
                raise errors.UpstreamBadGateway("the upstream's referrers list is not an image index")
            pages.append(entries)
            link = referrers.next_page(page.link)
            if link is None:
                return Listing(referrers.index(referrers.merge(pages)), time.time(), _API)
        raise errors.UpstreamBadGateway(f"the upstream's referrers list has more than {MAX_PAGES} pages")

    async def _from_fallback_tag(self, name: str, digest: oci.Digest) -> Listing:
        """The list under the fallback tag. A HEAD first: most images have no referrers, and finding
        that out then costs no GET (which Docker Hub counts against the pull limit)."""
        tag = referrers.fallback_tag(digest)
        try:
            await self.upstream.head_manifest(name, tag, [oci.OCI_INDEX])
            manifest = await self.upstream.get_manifest(name, tag, [oci.OCI_INDEX])
        except (errors.ManifestUnknown, errors.NameUnknown):
            return Listing(referrers.index([]), time.time(), _TAG)
        entries = referrers.descriptors(manifest.body)
        if entries is None:  # some other manifest under that tag: it lists no referrers
            entries = []
        return Listing(referrers.index(entries), time.time(), _TAG + manifest.digest)

    async def close(self) -> None:
        await self._flights.close()
