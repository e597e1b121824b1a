"""The manifest cache's memory layer stays bounded: entries leave memory after their TTL and come back
from the disk copy, re-hashed, when asked for again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiocache import SimpleMemoryCache

from mirror.oci import Manifest
from mirror.storage.manifests import ManifestCache, ManifestDisk
from tests.support.digests import sha256
from tests.support.polling import eventually

BODY = b'{"schemaVersion":2}'
DIGEST = sha256(BODY)
TYPE = "application/vnd.oci.image.manifest.v1+json"


async def until_empty(memory: SimpleMemoryCache) -> None:
    async def empty() -> bool:
        return not await memory.raw("__len__")

    await eventually(empty)


async def test_expired_entries_leave_memory_and_are_read_back_from_disk(tmp_path: Path) -> None:
    memory = SimpleMemoryCache()
    disk = await asyncio.to_thread(ManifestDisk, tmp_path / "manifests")
    cache = ManifestCache(memory, disk, memory_ttl=0.05)
    try:
        manifest = Manifest(BODY, DIGEST, TYPE)
        await cache.put_manifest("docker.io", "library/x", manifest)
        await cache.put_tag("docker.io", "library/x", "1", manifest)
        await until_empty(memory)

        assert await cache.manifest("docker.io", "library/x", DIGEST) == manifest
        tag = await cache.tag("docker.io", "library/x", "1")
        assert tag is not None
        assert tag.digest == DIGEST
        assert await memory.raw("__len__") == 2  # back in memory, for another TTL
        await until_empty(memory)
    finally:
        await cache.close()


async def test_without_a_disk_copy_memory_keeps_everything() -> None:
    memory = SimpleMemoryCache()
    cache = ManifestCache(memory, None, memory_ttl=0.01)
    manifest = Manifest(BODY, DIGEST, TYPE)
    await cache.put_manifest("docker.io", "library/x", manifest)
    await asyncio.sleep(0.05)  # five TTLs: an entry with the TTL would be gone
    assert await cache.manifest("docker.io", "library/x", DIGEST) == manifest
    await cache.close()
