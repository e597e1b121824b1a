"""create_app(settings): wiring only. Components are opened in `cleanup_ctx`, never at import time."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from mirror import __version__, build, keys, middlewares, oci, routes
from mirror.access import middleware as access
from mirror.cluster.mode import SharedMode
from mirror.config import Settings
from mirror.fills import FillLimits, Fills
from mirror.metrics import Metrics
from mirror.passthrough import PassThroughs
from mirror.proxy import RegistryProxy
from mirror.referrer_proxy import ReferrerProxy
from mirror.storage.blobs import BlobStore
from mirror.storage.eviction import Evictor
from mirror.storage.hashing import ReadBuffers
from mirror.storage.hot import HotBlobs
from mirror.storage.indexes import open_index
from mirror.storage.integrity import check_store
from mirror.storage.listings import ListingCache
from mirror.storage.manifests import ManifestCache, ManifestDisk
from mirror.storage.pins import PinRecord
from mirror.storage.rehash import Verifier
from mirror.storage.room import CacheLimits, Room
from mirror.storage.scrubber import Scrubber
from mirror.tag_lists import TagLists
from mirror.tls import ServerTls
from mirror.upstream.breaker import Breaker
from mirror.upstream.client import UpstreamClient
from mirror.upstream.clientauth import ClientGate
from mirror.upstream.health import UpstreamHealth
from mirror.upstream.router import Router
from mirror.warmup import warm_pins

log = structlog.get_logger("mirror.app")
ACCESS_FLUSH_SECONDS = 5.0
#: Small blobs (configs, tiny layers) up to HOT_BLOB bytes are also kept in memory, HOT_BYTES in all.
HOT_BLOB = 64 * 1024
HOT_BYTES = 32 * 1024 * 1024


def create_app(settings: Settings) -> web.Application:
    """The mirror as an aiohttp application; nothing is opened until it starts."""
    app = web.Application(middlewares=[middlewares.observe, access.authenticate], client_max_size=64 * 1024)
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = Metrics()
    app[keys.STOPPING] = keys.Stopping()
    app.on_shutdown.append(_note_shutdown)
    app.on_response_prepare.append(middlewares.add_headers)
    app.cleanup_ctx.append(access.guarding)
    app.cleanup_ctx.append(_components)
    routes.setup(app)
    return app


def serving(settings: Settings) -> tuple[web.Application, ssl.SSLContext | None]:
    """The app as `mirror serve` runs it, and its listener's TLS context (None for plain HTTP), which
    is reloaded while the app runs when its files change. Blocking: reads the TLS files."""
    tls = ServerTls.from_settings(settings)
    app = create_app(settings)
    if tls is None:
        return app, None
    app.cleanup_ctx.append(tls.watching)
    return app, tls.context


async def _note_shutdown(app: web.Application) -> None:
    """Shutdown began (the server now waits up to `shutdown_grace` for requests): fills get what is
    left of the same grace, not a second one."""
    app[keys.STOPPING].since = time.monotonic()


def _grace_left(app: web.Application) -> float:
    grace, since = app[keys.SETTINGS].shutdown_grace, app[keys.STOPPING].since
    return grace if since is None else max(0.0, grace - (time.monotonic() - since))


async def _flush_access_times(store: BlobStore) -> None:
    """Write the LRU access times of cache hits to the index every few seconds (not once per hit)."""
    while True:
        await asyncio.sleep(ACCESS_FLUSH_SECONDS)
        await asyncio.to_thread(store.flush_access)


def _open_store(settings: Settings) -> tuple[BlobStore, int]:
    """The blob store, its leftovers removed (blocking; raises on a damaged index)."""
    store = BlobStore(settings.cache_dir)
    try:
        store.usage()  # a damaged index raises here, not on the first pull
        return store, store.recover()
    except BaseException:
        store.close()
        raise


def _open_manifests(directory: Path) -> ManifestDisk:
    disk = ManifestDisk(directory)
    try:
        disk.get("-")  # a damaged index raises here, not on the first pull
    except BaseException:
        disk.close()
        raise
    return disk


async def _components(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[keys.SETTINGS], app[keys.METRICS]
    await asyncio.to_thread(settings.cache_dir.mkdir, parents=True, exist_ok=True)
    store, removed = await asyncio.to_thread(
        open_index, settings.cache_dir / "blobs", lambda: _open_store(settings)
    )
    metrics.cache_limit.set(settings.cache_max_bytes)
    revision = await asyncio.to_thread(build.revision)
    metrics.set_build(revision)
    pins = PinRecord(settings.pins, settings.cache_dir)
    await asyncio.to_thread(pins.load)
    limit = settings.cache_max_bytes
    high, low = int(limit * settings.cache_high_watermark), int(limit * settings.cache_low_watermark)
    evictor = Evictor(store, metrics, high, low, pins.digests, reserved=lambda: room.reserved)
    room = Room(store, evictor, CacheLimits(limit, high, low), metrics)
    evictor.poke()  # in the background: a store far over its limit serves while it shrinks
    shared = SharedMode(settings, metrics, store) if settings.shared else None
    manifests_dir = settings.cache_dir / "manifests"
    manifest_disk = await asyncio.to_thread(open_index, manifests_dir, lambda: _open_manifests(manifests_dir))
    manifests = ManifestCache(disk=manifest_disk, shared=shared.coordinator if shared else None)
    listings = ListingCache(manifest_disk)

    def committed(digest: str, size: int) -> None:
        evictor.poke(size)
        if shared is not None:
            shared.committed(digest)

    limits = FillLimits(
        settings.fill_min_bytes,
        settings.fill_min_window,
        settings.fill_max_seconds,
        settings.abandoned_fills,
        settings.abandoned_fill_bytes,
        settings.fill_range_streams,
        settings.fill_range_streams_total,
        settings.fill_range_gap,
    )
    buffers = ReadBuffers()  # one read buffer per thread for every hash of bytes on disk
    fills = Fills(store, metrics, on_commit=committed, limits=limits, room=room, buffers=buffers)
    passthroughs = PassThroughs(limits, metrics, room, buffers)
    verifier = Verifier(store, metrics, buffers)
    hot = HotBlobs(HOT_BYTES, HOT_BLOB)
    registries = settings.registries()
    async with contextlib.AsyncExitStack() as stack:
        if shared is not None:
            await shared.open(stack, fills)
            app[keys.COORDINATOR] = shared.coordinator
        proxies: dict[str, RegistryProxy] = {}
        gates: dict[str, ClientGate] = {}
        referrers: dict[str, ReferrerProxy] = {}
        tag_lists: dict[str, TagLists] = {}
        for upstream_settings in registries:
            breaker = Breaker(
                settings.breaker_failures, settings.breaker_cooldown, forced_open=settings.offline
            )
            health = UpstreamHealth(upstream_settings.registry, breaker, metrics, settings.ratelimit_reserve)
            client = UpstreamClient(upstream_settings, metrics, health)
            upstream = await stack.enter_async_context(client)
            ttl, referrers_ttl = upstream_settings.tag_ttl, upstream_settings.referrers_ttl
            assert ttl is not None, "registries() fills in inherited values"
            assert referrers_ttl is not None, "registries() fills in inherited values"
            proxies[upstream.label] = RegistryProxy(
                upstream,
                manifests,
                store,
                fills,
                hot,
                ttl,
                settings.negative_ttl,
                settings.prefetch,
                blobs=shared.source(upstream) if shared else None,
                shared=shared.fetches if shared else None,
                passthroughs=passthroughs,
                verifier=verifier,
            )
            if upstream_settings.upstream_auth == "client":
                gates[upstream.label] = ClientGate(
                    upstream.label,
                    upstream.auth_for,
                    metrics,
                    settings.upstream_auth_ttl,
                    settings.upstream_auth_denied_ttl,
                )
            referrers[upstream.label] = ReferrerProxy(upstream, listings, referrers_ttl)
            tag_lists[upstream.label] = TagLists(upstream, listings, manifests, ttl)
        router = Router(registries)
        app[keys.PROXIES], app[keys.ROUTER], app[keys.STORE] = proxies, router, store
        app[keys.FILLS], app[keys.PINS], app[keys.GATES] = fills, pins, gates
        app[keys.REFERRERS], app[keys.TAG_LISTS] = referrers, tag_lists
        app[keys.VERIFIER] = verifier
        platforms = oci.platform_filter(settings.platforms)
        warming = (
            asyncio.create_task(warm_pins(pins, router, proxies, platforms), name="pin warm-up")
            if pins.refs
            else None
        )
        flushing = asyncio.create_task(_flush_access_times(store), name="access-time flush")
        checking = asyncio.create_task(check_store(store), name="integrity pass")
        scrubbing = (
            asyncio.create_task(Scrubber(store, verifier, settings.scrub_rate).run(), name="scrubber")
            if settings.scrub_rate
            else None
        )
        log.info(
            "mirror_started",
            version=__version__,
            revision=revision,
            listen=str(settings.listen),
            upstreams={u.registry: u.url for u in registries},
            egress={u.registry: u.egress.redacted() for u in registries if u.egress.http or u.egress.https},
            cache_dir=str(settings.cache_dir),
            temp_files_removed=removed,
            pins=len(pins.refs),
            offline=settings.offline,
            redis=str(settings.redis_url) if settings.redis_url else None,
            advertise_url=settings.advertise_url,
        )
        try:
            yield
        finally:
            for task in (warming, flushing, checking, scrubbing):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            for proxy in proxies.values():
                await proxy.close()
            for gate in gates.values():
                await gate.close()
            for referrer_proxy in referrers.values():
                await referrer_proxy.close()
            for tag_list in tag_lists.values():
                await tag_list.close()
            await fills.close(_grace_left(app))
            await verifier.close()
            await evictor.close()
            await listings.close()
            await manifests.close()
    await asyncio.to_thread(store.close)
    log.info("mirror_stopped")
