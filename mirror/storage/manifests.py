"""Manifests and tag → digest mappings, in aiocache (memory by default), written through to disk.

Manifests by digest are immutable and never expire. A tag entry remembers when the upstream last
confirmed it, so the proxy can serve it within the TTL, revalidate it after, and still serve it stale
when the upstream fails. Keys are scoped by upstream and repository: two upstreams never share tags.

The disk copy (a small diskcache next to the blobs, bounded in size) lets a restarted mirror serve what
it had while its upstream is down or in offline mode; a manifest read back from it is re-hashed before it
is used. With a disk copy, memory holds an entry for `MEMORY_TTL` seconds after it was stored or read
back, so memory stays bounded however many images pass through; without one, memory keeps everything.

In the shared mode a third layer, Redis (any `SharedStore`), sits behind memory: what one replica
stores, the others find there, and a tag it revalidated is fresh for all (`refreshed_tag`). Memory is
asked first, so a hit in it costs no Redis operation; manifests by digest are read from the local disk
before Redis, tags from Redis before the disk (another replica may have confirmed them since). What comes
from Redis is checked like what comes from disk: manifests are re-hashed, nothing is unpickled.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import diskcache
import structlog
from aiocache import SimpleMemoryCache

from mirror import errors
from mirror.oci import Digest, Manifest
from mirror.storage.failures import translated

log = structlog.get_logger("mirror.manifests")

#: Seconds a manifest or tag entry stays in memory once stored or read back from disk.
MEMORY_TTL = 600.0
#: Seconds a manifest or tag entry lives in Redis: a day, so a Redis without an eviction policy stays
#: bounded, while a tag's TTL (minutes) is what decides when it is revalidated.
SHARED_TTL = 86400.0


class SharedStore(Protocol):
    """Bytes shared by the replicas (Redis); failures read as absent, never raise."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...


@dataclass(frozen=True, slots=True)
class TagEntry:
    """What a tag pointed at when the upstream last confirmed it (`checked_at`, wall-clock seconds)."""

    digest: str
    media_type: str
    checked_at: float

    def fresh(self, ttl: float, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - self.checked_at < ttl


class ManifestDisk:
    """The persistent copy: plain tuples in a diskcache bounded by size (oldest stored go first).
    Synchronous: callers run it in a thread."""

    def __init__(self, directory: Path, size_limit: int = 1024**3) -> None:
        self._cache = diskcache.Cache(
            str(directory), size_limit=size_limit, eviction_policy="least-recently-stored"
        )

    @translated
    def get(self, key: str) -> Any:
        return self._cache.get(key)

    @translated
    def set(self, key: str, value: Any) -> None:
        self._cache.set(key, value)

    @translated
    def delete(self, key: str) -> None:
        self._cache.delete(key)

    def close(self) -> None:
        self._cache.close()


class ManifestCache:
    """Typed access to the aiocache backend holding manifests and tags, and to its disk copy."""

    def __init__(
        self,
        cache: SimpleMemoryCache | None = None,
        disk: ManifestDisk | None = None,
        memory_ttl: float = MEMORY_TTL,
        shared: SharedStore | None = None,
    ) -> None:
        self._cache = cache if cache is not None else SimpleMemoryCache()
        self._disk = disk
        self._shared = shared
        # Only with a disk copy to read back from: otherwise expiry would lose what serves outages.
        self._memory_ttl = memory_ttl if disk is not None else None
        self._known_lock = asyncio.Lock()  # one read-modify-write of a repository's known tags at a time

    async def _hold(self, key: str, value: Any) -> None:
        """Put `value` in memory (for `memory_ttl` seconds when a disk copy backs it)."""
        await self._cache.set(key, value, ttl=self._memory_ttl)

    async def _remembered(self, key: str) -> Any:
        """The disk copy of `key` (None without one, or when the disk index fails)."""
        if self._disk is None:
            return None
        try:
            return await asyncio.to_thread(self._disk.get, key)
        except (OSError, sqlite3.Error, errors.StorageUnavailable) as exc:  # translated or not
            log.warning("manifest_disk_read_failed", detail=f"{type(exc).__name__}: {exc}"[:300])
            return None

    async def _keep(self, key: str, value: Any) -> None:
        """Write through to disk, best effort: a full or failing disk never fails the request (the
        entry stays in memory, and the upstream is asked again after a restart)."""
        if self._disk is None:
            return
        try:
            await asyncio.to_thread(self._disk.set, key, value)
        except (OSError, sqlite3.Error, errors.StorageUnavailable) as exc:  # translated or not
            log.warning("manifest_disk_write_failed", detail=f"{type(exc).__name__}: {exc}"[:300])

    @staticmethod
    def _manifest_key(upstream: str, name: str, digest: str) -> str:
        return f"manifest:{upstream}:{name}@{digest}"

    @staticmethod
    def _tag_key(upstream: str, name: str, tag: str) -> str:
        return f"tag:{upstream}:{name}:{tag}"

    async def manifest(self, upstream: str, name: str, digest: str) -> Manifest | None:
        key = self._manifest_key(upstream, name, digest)
        found = await self._cache.get(key)
        if isinstance(found, Manifest):
            return found
        kept = await self._remembered(key)
        if isinstance(kept, tuple) and len(kept) == 2 and isinstance(kept[0], bytes):
            manifest = _checked(kept[0], str(kept[1]), digest)
            if manifest is not None:  # a damaged disk copy is never served
                await self._hold(key, manifest)
                return manifest
        return await self._shared_manifest(key, digest)

    async def _shared_manifest(self, key: str, digest: str) -> Manifest | None:
        found = await self._shared.get(key) if self._shared is not None else None
        if found is None:
            return None
        media_type, _, body = found.partition(b"\n")
        manifest = _checked(body, media_type.decode(errors="replace"), digest)
        if manifest is not None:
            await self._hold(key, manifest)
            await self._keep(key, (manifest.body, manifest.media_type))
        return manifest

    async def put_manifest(self, upstream: str, name: str, manifest: Manifest) -> None:
        key = self._manifest_key(upstream, name, manifest.digest)
        await self._hold(key, manifest)
        await self._keep(key, (manifest.body, manifest.media_type))
        if self._shared is not None:
            await self._shared.set(key, manifest.media_type.encode() + b"\n" + manifest.body, SHARED_TTL)

    async def tag(self, upstream: str, name: str, tag: str) -> TagEntry | None:
        key = self._tag_key(upstream, name, tag)
        found = await self._cache.get(key)
        if isinstance(found, TagEntry):
            return found
        shared = await self._shared_tag(key)
        if shared is not None:
            await self._hold(key, shared)
            return shared
        kept = await self._remembered(key)
        if not (isinstance(kept, tuple) and len(kept) == 3):
            return None
        entry = TagEntry(str(kept[0]), str(kept[1]), float(kept[2]))
        await self._hold(key, entry)
        return entry

    async def refreshed_tag(self, upstream: str, name: str, tag: str) -> TagEntry | None:
        """The tag entry, preferring a newer confirmation another replica left in Redis."""
        key = self._tag_key(upstream, name, tag)
        mine = await self.tag(upstream, name, tag)
        shared = await self._shared_tag(key)
        if shared is not None and (mine is None or shared.checked_at > mine.checked_at):
            await self._hold(key, shared)
            return shared
        return mine

    async def _shared_tag(self, key: str) -> TagEntry | None:
        found = await self._shared.get(key) if self._shared is not None else None
        if found is None:
            return None
        try:
            doc = json.loads(found)
            return TagEntry(str(doc["digest"]), str(doc["media_type"]), float(doc["checked_at"]))
        except (ValueError, KeyError, TypeError):
            return None  # not ours, or damaged: as if absent

    async def _set_tag(self, key: str, entry: TagEntry) -> None:
        await self._hold(key, entry)
        await self._keep(key, (entry.digest, entry.media_type, entry.checked_at))
        if self._shared is not None:
            doc = {"digest": entry.digest, "media_type": entry.media_type, "checked_at": entry.checked_at}
            await self._shared.set(key, json.dumps(doc).encode(), SHARED_TTL)

    async def put_tag(self, upstream: str, name: str, tag: str, manifest: Manifest) -> None:
        entry = TagEntry(manifest.digest, manifest.media_type, time.time())
        await self._set_tag(self._tag_key(upstream, name, tag), entry)
        await self._note_tag(upstream, name, tag, known=True)

    async def confirm_tag(self, upstream: str, name: str, tag: str, entry: TagEntry) -> None:
        """Record that the upstream still maps the tag to the same digest."""
        await self._set_tag(self._tag_key(upstream, name, tag), replace(entry, checked_at=time.time()))
        await self._note_tag(upstream, name, tag, known=True)

    async def known_tags(self, upstream: str, name: str) -> tuple[str, ...]:
        """The tags of a repository whose manifest this cache holds (what offline mode lists)."""
        key = f"tags:{upstream}:{name}"
        found = await self._cache.get(key)
        if found is None:
            kept = await self._remembered(key)
            found = tuple(str(t) for t in kept) if isinstance(kept, tuple) else ()
            await self._hold(key, found)
        return tuple(found)

    async def _note_tag(self, upstream: str, name: str, tag: str, *, known: bool) -> None:
        async with self._known_lock:
            tags = await self.known_tags(upstream, name)
            if (tag in tags) == known:
                return
            updated = tuple(sorted({*tags, tag})) if known else tuple(t for t in tags if t != tag)
            key = f"tags:{upstream}:{name}"
            await self._hold(key, updated)
            await self._keep(key, updated)

    async def put_missing(self, upstream: str, name: str, tag: str, code: str, ttl: float) -> None:
        """Remember for `ttl` seconds that the upstream answered 404 (with `code`) for this tag."""
        if ttl > 0:
            await self._cache.set(f"missing:{upstream}:{name}:{tag}", code, ttl=ttl)

    async def missing(self, upstream: str, name: str, tag: str) -> str | None:
        """The 404 code remembered for this tag, if still remembered."""
        found = await self._cache.get(f"missing:{upstream}:{name}:{tag}")
        return found if isinstance(found, str) else None

    async def forget_tag(self, upstream: str, name: str, tag: str) -> None:
        key = self._tag_key(upstream, name, tag)
        await self._cache.delete(key)
        if self._disk is not None:
            await asyncio.to_thread(self._disk.delete, key)
        await self._note_tag(upstream, name, tag, known=False)

    async def close(self) -> None:
        await self._cache.close()
        if self._disk is not None:
            await asyncio.to_thread(self._disk.close)


def _checked(body: bytes, media_type: str, digest: str) -> Manifest | None:
    """The manifest if `body` hashes to `digest`, else None (never serve a damaged copy)."""
    if str(Digest.of(body, digest.partition(":")[0])) != digest:
        return None
    return Manifest(body, digest, media_type)
