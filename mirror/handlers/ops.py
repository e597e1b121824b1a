"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mirror import errors, keys


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


def _cache_state(cache_dir: Path) -> tuple[bool, int | None]:
    """Whether the cache directory is whole and writable (blob store and temp directory present: a
    deleted cache directory must fail readiness, never serve 200 with 0 bytes), and its free bytes."""
    whole = all(os.access(d, os.W_OK) for d in (cache_dir, cache_dir / "blobs", cache_dir / "tmp"))
    try:
        stat = os.statvfs(cache_dir)
    except OSError:
        return False, None
    return whole, stat.f_bavail * stat.f_frsize


async def readyz(request: web.Request) -> web.Response:
    """Readiness: start-up recovery is done and the cache directory is whole and writable. Free disk
    under `disk_reserve_bytes` is reported as degraded (still ready: the cache can be served)."""
    started = keys.STORE in request.app
    settings = request.app[keys.SETTINGS]
    whole, free = await asyncio.to_thread(_cache_state, settings.cache_dir)
    checks = {"started": started, "cache_writable": started and whole}
    ready = all(checks.values())
    low = free is not None and free < settings.disk_reserve_bytes
    # Upstream health is reported, never a reason to be unready: a mirror that can serve its cache is ready.
    proxies = request.app.get(keys.PROXIES, {})
    upstreams = {label: proxy.upstream.health.status() for label, proxy in proxies.items()}
    status = "not ready" if not ready else "degraded" if low else "ready"
    disk = {"free_bytes": free, "reserve_bytes": settings.disk_reserve_bytes, "low": low}
    found: dict[str, object] = {"status": status, "checks": checks, "disk": disk}
    found["upstreams"] = upstreams
    # Redis too: without it each replica serves alone, so it is "degraded", never a reason to fail.
    if keys.COORDINATOR in request.app:
        found["redis"] = request.app[keys.COORDINATOR].status()
    return web.json_response(found, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this app's registry."""
    app_metrics = request.app[keys.METRICS]
    store = request.app.get(keys.STORE)
    _, free = await asyncio.to_thread(_cache_state, request.app[keys.SETTINGS].cache_dir)
    if free is not None:
        app_metrics.cache_free.set(free)
    if store is not None:
        # A failing store (logged by it) keeps its gauges' last values: the rest of the scrape is what
        # an operator needs most on that day.
        with contextlib.suppress(errors.StorageUnavailable):
            size, entries = await asyncio.to_thread(store.usage)
            app_metrics.cache_size.set(size)
            app_metrics.cache_entries.set(entries)
            pinned = request.app[keys.PINS].digests()
            if pinned:
                app_metrics.pinned_bytes.set(await asyncio.to_thread(store.bytes_of, pinned))
    body = await asyncio.to_thread(generate_latest, app_metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
