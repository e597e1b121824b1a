"""create_app(settings): wiring only. Components are opened in `cleanup_ctx`, never at import time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from mirror import keys, middlewares, oci, routes
from mirror.config import Settings
from mirror.fills import FillLimits, Fills
from mirror.metrics import Metrics
from mirror.proxy import RegistryProxy
from mirror.storage.blobs import BlobStore, CheckReport
from mirror.storage.eviction import Evictor
from mirror.storage.hot import HotBlobs
from mirror.storage.indexes import open_index
from mirror.storage.manifests import ManifestCache, ManifestDisk
from mirror.storage.pins import PinRecord
from mirror.upstream.breaker import Breaker
from mirror.upstream.client import UpstreamClient
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
    app = web.Application(middlewares=[middlewares.observe], client_max_size=64 * 1024)
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = Metrics()
    app[keys.STOPPING] = keys.Stopping()
    app.on_shutdown.append(_note_shutdown)
    app.on_response_prepare.append(middlewares.add_headers)
    app.cleanup_ctx.append(_components)
    routes.setup(app)
    return app


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


def _open_store(settings: Settings) -> tuple[BlobStore, int, CheckReport]:
    """The blob store, its leftovers removed and its index checked (blocking; raises on a damaged index)."""
    store = BlobStore(settings.cache_dir, settings.cache_max_bytes)
    try:
        return store, store.recover(), store.check()
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
    store, removed, report = await asyncio.to_thread(
        open_index, settings.cache_dir / "blobs", lambda: _open_store(settings)
    )
    metrics.cache_limit.set(settings.cache_max_bytes)
    pins = PinRecord(settings.pins, settings.cache_dir)
    await asyncio.to_thread(pins.load)
    limit = settings.cache_max_bytes
    evictor = Evictor(
        store,
        metrics,
        int(limit * settings.cache_high_watermark),
        int(limit * settings.cache_low_watermark),
        pins.digests,
    )
    await evictor.evict_if_needed()
    manifests_dir = settings.cache_dir / "manifests"
    disk = await asyncio.to_thread(open_index, manifests_dir, lambda: _open_manifests(manifests_dir))
    manifests = ManifestCache(disk=disk)
    limits = FillLimits(
        settings.fill_min_bytes,
        settings.fill_min_window,
        settings.fill_max_seconds,
        settings.abandoned_fills,
        settings.abandoned_fill_bytes,
    )
    fills = Fills(store, metrics, on_commit=evictor.poke, limits=limits)
    hot = HotBlobs(HOT_BYTES, HOT_BLOB)
    registries = settings.registries()
    async with contextlib.AsyncExitStack() as stack:
        proxies: dict[str, RegistryProxy] = {}
        for upstream_settings in registries:
            breaker = Breaker(
                settings.breaker_failures, settings.breaker_cooldown, forced_open=settings.offline
            )
            health = UpstreamHealth(upstream_settings.registry, breaker, metrics, settings.ratelimit_reserve)
            client = UpstreamClient(upstream_settings, metrics, health)
            upstream = await stack.enter_async_context(client)
            ttl = upstream_settings.tag_ttl
            assert ttl is not None, "registries() fills in inherited values"
            proxies[upstream.label] = RegistryProxy(
                upstream, manifests, store, fills, hot, ttl, settings.negative_ttl, settings.prefetch
            )
        router = Router(registries)
        app[keys.PROXIES], app[keys.ROUTER], app[keys.STORE] = proxies, router, store
        app[keys.FILLS], app[keys.PINS] = fills, pins
        platforms = oci.platform_filter(settings.platforms)
        warming = (
            asyncio.create_task(warm_pins(pins, router, proxies, platforms), name="pin warm-up")
            if pins.refs
            else None
        )
        flushing = asyncio.create_task(_flush_access_times(store), name="access-time flush")
        log.info(
            "mirror_started",
            listen=str(settings.listen),
            upstreams={u.registry: u.url for u in registries},
            cache_dir=str(settings.cache_dir),
            temp_files_removed=removed,
            index_rows_dropped=report.missing + report.wrong_size,
            orphans_removed=report.orphans,
            pins=len(pins.refs),
            offline=settings.offline,
        )
        try:
            yield
        finally:
            for task in (warming, flushing):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            for proxy in proxies.values():
                await proxy.close()
            await fills.close(_grace_left(app))
            await evictor.close()
            await manifests.close()
    await asyncio.to_thread(store.close)
    log.info("mirror_stopped")
