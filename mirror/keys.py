"""Every typed application key, in one place.

`SETTINGS` and `METRICS` are set by `create_app`; the components are opened in `cleanup_ctx`, which
aiohttp runs before it freezes the app and before the server accepts a request, so handlers always find
them set.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from mirror.access.guard import Guard
from mirror.cluster.coordinator import Coordinator
from mirror.config import Settings
from mirror.fills import Fills
from mirror.metrics import Metrics
from mirror.proxy import RegistryProxy
from mirror.referrer_proxy import ReferrerProxy
from mirror.storage.blobs import BlobStore
from mirror.storage.pins import PinRecord
from mirror.storage.rehash import Verifier
from mirror.tag_lists import TagLists
from mirror.upstream.clientauth import ClientGate
from mirror.upstream.router import Router

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
#: The proxy of each upstream, by its label (registry host).
PROXIES: web.AppKey[dict[str, RegistryProxy]] = web.AppKey("proxies")
#: The referrers-list and tag-list services of each upstream, by its label.
REFERRERS: web.AppKey[dict[str, ReferrerProxy]] = web.AppKey("referrers")
TAG_LISTS: web.AppKey[dict[str, TagLists]] = web.AppKey("tag_lists")
ROUTER = web.AppKey("router", Router)
STORE = web.AppKey("store", BlobStore)
FILLS = web.AppKey("fills", Fills)
PINS = web.AppKey("pins", PinRecord)
#: The first-serve re-hashes of stored blobs (and the scrubber's).
VERIFIER = web.AppKey("verifier", Verifier)


@dataclass
class Stopping:
    """When shutdown began (`time.monotonic()`): requests and fills share one `shutdown_grace`."""

    since: float | None = None


STOPPING = web.AppKey("stopping", Stopping)
#: Set only in the shared mode (redis_url).
COORDINATOR = web.AppKey("coordinator", Coordinator)
#: The client-credentials guard; absent when neither auth_htpasswd nor auth_tokens is set.
GUARD = web.AppKey("guard", Guard)
#: The authorization gate of each upstream in client mode (`upstream_auth = "client"`), by its label.
GATES: web.AppKey[dict[str, ClientGate]] = web.AppKey("gates")
