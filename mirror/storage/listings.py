"""Listings: documents the upstream computes and may change at any time (tag list pages, referrers
lists), cached like a tag: in memory (aiocache), written through to the manifests' disk index, each
remembering when the upstream last confirmed it, so it is served within a TTL, revalidated after it and
served stale when the upstream fails. Keys are scoped by kind, upstream and repository.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

from aiocache import SimpleMemoryCache

from mirror.storage.manifests import MEMORY_TTL, ManifestDisk


@dataclass(frozen=True, slots=True)
class Listing:
    """A cached listing: its exact body, what revalidates it, a paging `Link` to relay, and when the
    upstream last confirmed it (`checked_at`, wall-clock seconds)."""

    body: bytes
    checked_at: float
    validator: str = ""  # e.g. "tag:<digest>" of a referrers fallback tag, "api" for the referrers API
    link: str | None = None

    def fresh(self, ttl: float, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - self.checked_at < ttl


class ListingCache:
    """Listings by (kind, upstream, repository, key); the disk copy is shared with the manifest cache,
    which owns (and closes) it."""

    def __init__(self, disk: ManifestDisk | None = None, memory_ttl: float = MEMORY_TTL) -> None:
        self._cache = SimpleMemoryCache()
        self._disk = disk
        self._memory_ttl = memory_ttl if disk is not None else None

    @staticmethod
    def _key(kind: str, upstream: str, name: str, key: str) -> str:
        return f"{kind}:{upstream}:{name}:{key}"

    async def get(self, kind: str, upstream: str, name: str, key: str) -> Listing | None:
        cache_key = self._key(kind, upstream, name, key)
        found = await self._cache.get(cache_key)
        if isinstance(found, Listing):
            return found
        kept: Any = None if self._disk is None else await asyncio.to_thread(self._disk.get, cache_key)
        if not (isinstance(kept, tuple) and len(kept) == 4 and isinstance(kept[0], bytes)):
            return None
        body, checked_at, validator, link = kept
        listing = Listing(body, float(checked_at), str(validator), None if link is None else str(link))
        await self._cache.set(cache_key, listing, ttl=self._memory_ttl)
        return listing

    async def put(self, kind: str, upstream: str, name: str, key: str, listing: Listing) -> None:
        cache_key = self._key(kind, upstream, name, key)
        await self._cache.set(cache_key, listing, ttl=self._memory_ttl)
        if self._disk is not None:
            kept = (listing.body, listing.checked_at, listing.validator, listing.link)
            await asyncio.to_thread(self._disk.set, cache_key, kept)

    async def confirm(self, kind: str, upstream: str, name: str, key: str, listing: Listing) -> Listing:
        """Record that the upstream still gives the same listing; the refreshed entry."""
        confirmed = replace(listing, checked_at=time.time())
        await self.put(kind, upstream, name, key, confirmed)
        return confirmed

    async def forget(self, kind: str, upstream: str, name: str, key: str) -> None:
        cache_key = self._key(kind, upstream, name, key)
        await self._cache.delete(cache_key)
        if self._disk is not None:
            await asyncio.to_thread(self._disk.delete, cache_key)

    async def close(self) -> None:
        await self._cache.close()
