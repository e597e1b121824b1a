"""Every typed application key, in one place.

`SETTINGS` and `METRICS` are set by `create_app`; the components are opened in `cleanup_ctx`, which
aiohttp runs before it freezes the app and before the server accepts a request, so handlers always find
them set.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from mirror.config import Settings
from mirror.fills import Fills
from mirror.metrics import Metrics
from mirror.proxy import RegistryProxy
from mirror.storage.blobs import BlobStore
from mirror.storage.pins import PinRecord
from mirror.upstream.router import Router

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
#: The proxy of each upstream, by its label (registry host).
PROXIES: web.AppKey[dict[str, RegistryProxy]] = web.AppKey("proxies")
ROUTER = web.AppKey("router", Router)
STORE = web.AppKey("store", BlobStore)
FILLS = web.AppKey("fills", Fills)
PINS = web.AppKey("pins", PinRecord)


@dataclass
class Stopping:
    """When shutdown began (`time.monotonic()`): requests and fills share one `shutdown_grace`."""

    since: float | None = None


STOPPING = web.AppKey("stopping", Stopping)
