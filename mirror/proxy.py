"""RegistryProxy: the cache-or-fetch policy. Handlers call it; it decides between the caches and upstream.

Content by digest is immutable and served from cache for good. A tag is served from cache within its TTL,
then revalidated with an upstream HEAD (free against Docker Hub's pull limit) and fetched again only when
its digest changed; when revalidation fails the cached manifest is served stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import structlog

from mirror import errors, oci
from mirror.answers import BlobAnswer, Filling, InMemory, ManifestAnswer, Stored, Upstream
from mirror.cluster.once import SharedFetches
from mirror.fills import Fills
from mirror.oci import Manifest
from mirror.passthrough import PassThrough, PassThroughs
from mirror.singleflight import SingleFlight
from mirror.storage.blobs import BlobStore, StoredBlob
from mirror.storage.hot import HotBlobs
from mirror.storage.manifests import ManifestCache, TagEntry
from mirror.storage.rehash import Verifier
from mirror.upstream.client import UpstreamClient
from mirror.upstream.transport import BlobSource

log = structlog.get_logger("mirror.proxy")

#: Upstream failures after which a cached tag is served stale rather than failing the pull.
STALE_ON = (errors.UpstreamUnavailable, errors.UpstreamBadGateway, errors.TooManyRequests)


class RegistryProxy:
    """Pull-side registry operations against one upstream; names are the upstream's own (routed)."""

    def __init__(
        self,
        upstream: UpstreamClient,
        manifests: ManifestCache,
        store: BlobStore,
        fills: Fills,
        hot: HotBlobs,
        tag_ttl: float,
        negative_ttl: float = 0.0,
        prefetch: bool = False,
        blobs: BlobSource | None = None,
        shared: SharedFetches | None = None,
        passthroughs: PassThroughs | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.upstream = upstream
        #: Where fills get blob bytes: the upstream, or in the shared mode peers before it.
        self._blobs: BlobSource = blobs if blobs is not None else upstream
        self._shared = shared  # the shared mode: one upstream manifest request across replicas
        self._verifier = verifier  # first-serve re-hashes of stored blobs (None: trust the store)
        self._manifests = manifests
        self._store = store
        self._fills = fills
        self._passthroughs = passthroughs  # blobs the cache cannot store, streamed from upstream
        self._hot = hot
        self._tag_ttl = tag_ttl
        self._negative_ttl = negative_ttl
        self._prefetch = prefetch
        self._background: set[asyncio.Task[None]] = set()
        self._flights: SingleFlight[Manifest | ManifestAnswer] = SingleFlight()

    @property
    def label(self) -> str:
        return self.upstream.label

    # -- manifests ----------------------------------------------------------------------------

    async def manifest(self, name: str, reference: str, accept_headers: list[str]) -> ManifestAnswer:
        """The manifest for a tag or digest, from cache when allowed, else from upstream."""
        accepted = oci.accepted_types(accept_headers)
        accept = sorted(accepted) if accepted else list(oci.MANIFEST_TYPES)
        if oci.is_digest(reference):
            cached = await self._manifests.manifest(self.label, name, reference)
            if cached is not None and oci.admits(accepted, cached.media_type):
                return ManifestAnswer(cached, "hit")
            return await self._fetch(name, reference, accept)
        entry = await self._manifests.tag(self.label, name, reference)
        if entry is not None and oci.admits(accepted, entry.media_type):
            cached = await self._manifests.manifest(self.label, name, entry.digest)
            if cached is not None:
                if entry.fresh(self._tag_ttl):
                    return ManifestAnswer(cached, "hit")
                if self.upstream.health.budget_low():
                    return ManifestAnswer(cached, "stale")  # keep the pull budget for misses
                return await self._revalidate(name, reference, entry, cached, accept)
        code = await self._manifests.missing(self.label, name, reference)
        if code is not None:
            raise errors.not_found_for("manifest", code)("upstream answered 404 (remembered)")
        try:
            return await self._fetch(name, reference, accept)
        except (errors.ManifestUnknown, errors.NameUnknown) as exc:
            await self._manifests.put_missing(self.label, name, reference, exc.code, self._negative_ttl)
            raise

    async def _fetch(self, name: str, reference: str, accept: list[str]) -> ManifestAnswer:
        async def fetch() -> Manifest:
            manifest = await self.upstream.get_manifest(name, reference, accept)
            await self._manifests.put_manifest(self.label, name, manifest)
            if not oci.is_digest(reference):
                await self._manifests.put_tag(self.label, name, reference, manifest)
            return manifest

        async def fetch_once() -> Manifest:  # in the shared mode, one replica asks the upstream
            if self._shared is None:
                return await fetch()
            key = f"{self.label}:{name}:{reference}:{','.join(accept)}"
            found, _ = await self._shared.run(key, fetch, lambda: self._stored(name, reference, accept))
            return found

        manifest, joined = await self._flights.run(("get", name, reference, tuple(accept)), fetch_once)
        assert isinstance(manifest, Manifest)
        if self._prefetch and not joined and manifest.media_type in oci.IMAGE_TYPES:
            task = asyncio.create_task(self._prefetch_blobs(name, manifest))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return ManifestAnswer(manifest, "coalesced" if joined else "miss")

    async def _stored(self, name: str, reference: str, accept: list[str]) -> Manifest | None:
        """What another replica stored for this request meanwhile: the manifest, for a tag only if
        confirmed within the TTL, and only if the client accepts its media type."""
        if not oci.is_digest(reference):
            entry = await self._manifests.tag(self.label, name, reference)
            if entry is None or not entry.fresh(self._tag_ttl):
                return None
            reference = entry.digest
        found = await self._manifests.manifest(self.label, name, reference)
        return found if found is not None and found.media_type in accept else None

    async def _prefetch_blobs(self, name: str, manifest: Manifest) -> None:
        """Start fills for an image's config and layers, so the client's blob requests join them."""
        started = 0
        for digest in oci.blob_digests(manifest.body):
            if self._fills.get(digest) is None and not await asyncio.to_thread(
                self._store.__contains__, digest
            ):
                self._fills.start(self._blobs, name, digest)
                started += 1
        log.info("blobs_prefetched", upstream=self.label, digest=manifest.digest, fills=started)

    async def _revalidate(
        self, name: str, tag: str, entry: TagEntry, cached: Manifest, accept: list[str]
    ) -> ManifestAnswer:
        async def revalidate() -> ManifestAnswer:
            # A request that read the tag before another one's revalidation finished gets here after
            # it: the tag is then fresh again and needs no second HEAD.
            # In the shared mode another replica may have confirmed it: then it is fresh here too.
            current = await self._manifests.refreshed_tag(self.label, name, tag)
            if current is not None and current.digest == entry.digest and current.fresh(self._tag_ttl):
                return ManifestAnswer(cached, "hit")
            try:
                head = await self.upstream.head_manifest(name, tag, accept)
            except STALE_ON as exc:
                log.warning("manifest_served_stale", upstream=self.label, tag=tag, reason=str(exc))
                return ManifestAnswer(cached, "stale")
            except (errors.ManifestUnknown, errors.NameUnknown):
                await self._manifests.forget_tag(self.label, name, tag)
                raise
            if head is not None and head.digest == entry.digest:
                await self._manifests.confirm_tag(self.label, name, tag, entry)
                return ManifestAnswer(cached, "revalidated")
            known = await self._manifests.manifest(self.label, name, head.digest) if head else None
            if known is not None:  # never GET what a HEAD says we already have
                await self._manifests.put_tag(self.label, name, tag, known)
                return ManifestAnswer(known, "revalidated")
            return await self._fetch(name, tag, accept)

        key = ("revalidate", name, tag, tuple(accept))
        if self._flights.busy(key):  # another request is revalidating: don't queue behind it
            return ManifestAnswer(cached, "stale")
        answer, _ = await self._flights.run(key, revalidate)
        assert isinstance(answer, ManifestAnswer)
        return answer

    # -- blobs --------------------------------------------------------------------------------

    async def blob(self, name: str, digest: str) -> BlobAnswer:
        """The blob's bytes: the stored file on a hit, else the (new or joined) fill for it."""
        if (data := self._hot.get(digest)) is not None:
            self._store.touch(digest)
            return BlobAnswer("hit", len(data), InMemory(data))
        if self._fills.get(digest) is None:  # a fill under way is joined, even if it just committed
            stored = await self._open_stored(digest)
            if stored is not None:
                if stored.data is not None:
                    self._hot.put(digest, stored.data)
                    stored.close()
                    return BlobAnswer("hit", stored.size, InMemory(stored.data))
                check = self._verifier.check_for(stored) if self._verifier is not None else None
                return BlobAnswer("hit", stored.size, Stored(stored, check))
            if self._passthroughs is not None and (refused := self._passthroughs.refused(digest)):
                reason, size = refused  # not stored lately: no fill, straight from upstream
                through = self._passthroughs.of(self._blobs, name, digest)
                return BlobAnswer("miss", size, Upstream(through, reason))
        fill, joined = await self._fills.join(self._blobs, name, digest)
        # The pass-through for the rest of the blob is made only if the fill ends `unstored`, not per join.
        rest: Callable[[], PassThrough] | None = None
        if self._passthroughs is not None:
            rest = partial(self._passthroughs.of, self._blobs, name, digest)
        if fill.finished and fill.error is None:  # verified and being committed: as good as stored
            return BlobAnswer("hit", fill.size, Filling(fill), rest)
        return BlobAnswer("coalesced" if joined else "miss", fill.size, Filling(fill), rest)

    async def _open_stored(self, digest: str) -> StoredBlob | None:
        """The stored blob, or None: also when the store fails (its directory deleted, its index
        broken; logged by the store), so that the fill takes the blob from upstream and its readers
        get it whole through a pass-through instead of a 503."""
        try:
            return await asyncio.to_thread(self._store.open, digest, self._hot.max_blob)
        except errors.StorageUnavailable:
            return None

    async def ensure_blob(self, name: str, digest: str) -> None:
        """Make sure a blob is stored, downloading it if needed."""
        if self._fills.get(digest) is None and await asyncio.to_thread(self._store.__contains__, digest):
            return
        fill = self._fills.start(self._blobs, name, digest)
        await fill.done.wait()
        if fill.error is not None:
            raise fill.error

    async def blob_size(self, name: str, digest: str) -> tuple[int | None, str]:
        """The blob's size for a HEAD, without downloading it; and the cache result."""
        size = await asyncio.to_thread(self._store.size_of, digest)
        if size is not None:
            return size, "hit"
        fill = self._fills.get(digest)
        if fill is not None and fill.size is not None:
            return fill.size, "coalesced"
        return await self.upstream.head_blob(name, digest), "miss"

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._flights.close()
