"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mirror import keys


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: start-up recovery is done and the cache directory is writable."""
    started = keys.STORE in request.app
    cache_dir = request.app[keys.SETTINGS].cache_dir
    writable = started and await asyncio.to_thread(os.access, cache_dir, os.W_OK)
    checks = {"started": started, "cache_writable": bool(writable)}
    ready = all(checks.values())
    # Upstream health is reported, never a reason to be unready: a mirror that can serve its cache is ready.
    proxies = request.app.get(keys.PROXIES, {})
    upstreams = {label: proxy.upstream.health.status() for label, proxy in proxies.items()}
    found: dict[str, object] = {"status": "ready" if ready else "not ready", "checks": checks}
    found["upstreams"] = upstreams
    # Redis too: without it each replica serves alone, so it is "degraded", never a reason to fail.
    if keys.COORDINATOR in request.app:
        found["redis"] = request.app[keys.COORDINATOR].status()
    return web.json_response(found, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this app's registry."""
    app_metrics = request.app[keys.METRICS]
    store = request.app.get(keys.STORE)
    if store is not None:
        size, entries = await asyncio.to_thread(store.usage)
        app_metrics.cache_size.set(size)
        app_metrics.cache_entries.set(entries)
        pinned = request.app[keys.PINS].digests()
        if pinned:
            app_metrics.pinned_bytes.set(await asyncio.to_thread(store.bytes_of, pinned))
    body = await asyncio.to_thread(generate_latest, app_metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
