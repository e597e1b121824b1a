"""Every typed application key, in one place."""

from __future__ import annotations

from aiohttp import web

from mirror.config import Settings
from mirror.metrics import Metrics
from mirror.runtime import Runtime

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
RUNTIME = web.AppKey("runtime", Runtime)
