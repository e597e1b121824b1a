"""Manifests and tag → digest mappings, in aiocache (memory by default).

Manifests by digest are immutable and kept without expiry. A tag entry remembers when the upstream last
confirmed it, so the proxy can serve it within the TTL, revalidate it after, and still serve it stale
when the upstream fails. Keys are scoped by upstream and repository: two upstreams never share tags.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from aiocache import SimpleMemoryCache


@dataclass(frozen=True, slots=True)
class Manifest:
    """The exact upstream bytes of a manifest, their digest and media type."""

    body: bytes
    digest: str
    media_type: str


@dataclass(frozen=True, slots=True)
class TagEntry:
    """What a tag pointed at when the upstream last confirmed it (`checked_at`, wall-clock seconds)."""

    digest: str
    media_type: str
    checked_at: float

    def fresh(self, ttl: float, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - self.checked_at < ttl


class ManifestCache:
    """Typed access to the aiocache backend holding manifests and tags."""

    def __init__(self, cache: SimpleMemoryCache | None = None) -> None:
        self._cache = cache if cache is not None else SimpleMemoryCache()

    @staticmethod
    def _manifest_key(upstream: str, name: str, digest: str) -> str:
        return f"manifest:{upstream}:{name}@{digest}"

    @staticmethod
    def _tag_key(upstream: str, name: str, tag: str) -> str:
        return f"tag:{upstream}:{name}:{tag}"

    async def manifest(self, upstream: str, name: str, digest: str) -> Manifest | None:
        found = await self._cache.get(self._manifest_key(upstream, name, digest))
        return found if isinstance(found, Manifest) else None

    async def put_manifest(self, upstream: str, name: str, manifest: Manifest) -> None:
        await self._cache.set(self._manifest_key(upstream, name, manifest.digest), manifest)

    async def tag(self, upstream: str, name: str, tag: str) -> TagEntry | None:
        found = await self._cache.get(self._tag_key(upstream, name, tag))
        return found if isinstance(found, TagEntry) else None

    async def put_tag(self, upstream: str, name: str, tag: str, manifest: Manifest) -> None:
        entry = TagEntry(manifest.digest, manifest.media_type, time.time())
        await self._cache.set(self._tag_key(upstream, name, tag), entry)

    async def confirm_tag(self, upstream: str, name: str, tag: str, entry: TagEntry) -> None:
        """Record that the upstream still maps the tag to the same digest."""
        await self._cache.set(self._tag_key(upstream, name, tag), replace(entry, checked_at=time.time()))

    async def put_missing(self, upstream: str, name: str, tag: str, code: str, ttl: float) -> None:
        """Remember for `ttl` seconds that the upstream answered 404 (with `code`) for this tag."""
        if ttl > 0:
            await self._cache.set(f"missing:{upstream}:{name}:{tag}", code, ttl=ttl)

    async def missing(self, upstream: str, name: str, tag: str) -> str | None:
        """The 404 code remembered for this tag, if still remembered."""
        found = await self._cache.get(f"missing:{upstream}:{name}:{tag}")
        return found if isinstance(found, str) else None

    async def forget_tag(self, upstream: str, name: str, tag: str) -> None:
        await self._cache.delete(self._tag_key(upstream, name, tag))

    async def close(self) -> None:
        await self._cache.close()
