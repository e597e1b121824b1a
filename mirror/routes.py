"""The route table, in one place."""

from __future__ import annotations

from aiohttp import web

from mirror.handlers import ops, peer, registry

_NAME = "{name:[^?#]+}"


def setup(app: web.Application) -> None:
    app.router.add_get("/v2/", registry.base)
    app.router.add_get("/v2", registry.base)
    app.router.add_get(f"/v2/{_NAME}/manifests/{{reference}}", registry.manifest)
    app.router.add_get(f"/v2/{_NAME}/blobs/{{digest}}", registry.blob)
    app.router.add_get(f"/v2/{_NAME}/tags/list", registry.tags)
    app.router.add_get(f"/v2/{_NAME}/referrers/{{digest}}", registry.referrers)
    app.router.add_route("*", "/v2/{tail:.*}", registry.fallback)
    app.router.add_get(peer.PATH, peer.blob)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
