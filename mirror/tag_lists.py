"""TagLists: the cache-or-fetch policy of `GET /v2/<name>/tags/list`.

A tag list page (keyed by its `n` and `last`) is cached like a tag: served within the tag TTL, fetched
again after it (tag lists do not count against Docker Hub's pull limit, and no registry offers a cheaper
check), and served stale when the upstream is down or rate-limiting. In offline mode a page never
fetched is built from the tags whose manifests the mirror holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import structlog

from mirror import errors, oci
from mirror.proxy import STALE_ON
from mirror.singleflight import SingleFlight
from mirror.storage.listings import Listing, ListingCache
from mirror.storage.manifests import ManifestCache
from mirror.upstream.client import UpstreamClient

log = structlog.get_logger("mirror.tags")
KIND = "tags"


@dataclass(frozen=True, slots=True)
class TagsAnswer:
    body: bytes
    link: str | None  # the `Link` naming the next page, when there is one
    result: str  # hit | miss | coalesced | revalidated | stale | local


class TagLists:
    """Tag lists of one upstream; names are the upstream's own (routed)."""

    def __init__(
        self, upstream: UpstreamClient, listings: ListingCache, manifests: ManifestCache, ttl: float
    ) -> None:
        self.upstream = upstream
        self._listings = listings
        self._manifests = manifests
        self._ttl = ttl
        self._flights: SingleFlight[Listing] = SingleFlight()

    @property
    def label(self) -> str:
        return self.upstream.label

    async def tags(self, name: str, query: Mapping[str, str], path: str) -> TagsAnswer:
        """The page of `name`'s tags that `n`/`last` in `query` ask for; `path` is the client's own
        request path, for a `Link` to the next page the mirror builds itself."""
        passed = {k: query[k] for k in ("n", "last") if k in query}
        key = urlencode(sorted(passed.items()))
        cached = await self._listings.get(KIND, self.label, name, key)
        if cached is not None and cached.fresh(self._ttl):
            return self._answer(cached, name, path, "hit")
        if self.upstream.health.breaker.forced_open and cached is None:
            return await self._local(name, passed, path, query.get("ns"))
        try:
            listing, joined = await self._flights.run(
                ("get", name, key), lambda: self._fetch(name, key, passed)
            )
        except STALE_ON as exc:
            if cached is None:
                raise
            log.warning("tags_served_stale", upstream=self.label, name=name, reason=str(exc))
            return self._answer(cached, name, path, "stale")
        except (errors.NameUnknown, errors.ManifestUnknown):
            await self._listings.forget(KIND, self.label, name, key)
            raise
        result = "coalesced" if joined else "miss" if cached is None else "revalidated"
        return self._answer(listing, name, path, result)

    @staticmethod
    def _answer(listing: Listing, name: str, path: str, result: str) -> TagsAnswer:
        """The answer, its upstream `Link` pointed at the path the client asked."""
        link = listing.link and oci.rebase_link(listing.link, f"/v2/{name}/tags/list", path)
        return TagsAnswer(listing.body, link, result)

    async def _fetch(self, name: str, key: str, passed: Mapping[str, str]) -> Listing:
        body, headers = await self.upstream.tags(name, passed)
        if oci.parse_tag_list(body) is None:
            raise errors.UpstreamBadGateway("upstream tag list is not a tag list document")
        listing = Listing(body, time.time(), link=headers.get("Link"))
        await self._listings.put(KIND, self.label, name, key, listing)
        return listing

    async def _local(self, name: str, passed: Mapping[str, str], path: str, ns: str | None) -> TagsAnswer:
        """Offline: the tags whose manifests are cached, paged as the spec pages a tag list."""
        n = passed.get("n", "")
        limit = int(n) if n.isascii() and n.isdigit() and len(n) < 7 else None
        known = await self._manifests.known_tags(self.label, name)
        page, next_last = oci.tag_page(known, limit, passed.get("last"))
        link = None
        if next_last is not None and limit is not None:
            params = {"n": str(limit), "last": next_last, **({"ns": ns} if ns else {})}
            link = f'<{path}?{urlencode(params)}>; rel="next"'
        body = json.dumps({"name": name, "tags": page}).encode()
        return TagsAnswer(body, link, "local")

    async def close(self) -> None:
        await self._flights.close()
