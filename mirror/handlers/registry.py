"""Handlers of the registry API (pull side): parse the request, ask the proxy, shape the response."""

from __future__ import annotations

import json

from aiohttp import web

from mirror import errors, keys, oci
from mirror.middlewares import context
from mirror.proxy import RegistryProxy
from mirror.transfer import blob_headers, send_blob


async def base(request: web.Request) -> web.Response:
    """`GET /v2/`: the API version check every client starts with."""
    context(request).kind = "base"
    return web.json_response({})


async def manifest(request: web.Request) -> web.Response:
    """`GET`/`HEAD /v2/<name>/manifests/<tag|digest>`."""
    ctx = context(request)
    ctx.kind = "manifest"
    reference = str(oci.parse_reference(request.match_info["reference"]))
    proxy, name = _route(request)
    answer = await proxy.manifest(name, reference, request.headers.getall("Accept", []))
    found = answer.manifest
    ctx.result, ctx.source = (
        answer.result,
        "cache" if answer.result in ("hit", "revalidated", "stale") else "upstream",
    )
    headers = {"Docker-Content-Digest": found.digest, "ETag": f'"{found.digest}"'}
    if request.headers.get("If-None-Match") == f'"{found.digest}"':
        return web.Response(status=304, headers=headers)
    if request.method == "GET":
        ctx.bytes_sent = len(found.body)
    return web.Response(body=found.body, content_type=found.media_type, headers=headers)


async def blob(request: web.Request) -> web.StreamResponse:
    """`GET`/`HEAD /v2/<name>/blobs/<digest>`, with a single byte Range."""
    ctx = context(request)
    ctx.kind = "blob"
    digest = str(oci.Digest.parse(request.match_info["digest"]))
    proxy, name = _route(request)
    if request.method == "HEAD":
        size, ctx.result = await proxy.blob_size(name, digest)
        return web.Response(headers=blob_headers(digest, size))
    answer = await proxy.blob(name, digest)
    ctx.result = answer.result
    ctx.source = "cache" if answer.result == "hit" else "upstream"
    try:
        sent = await send_blob(request, answer, digest)
    finally:
        answer.close()
    ctx.bytes_sent = sent.count
    if not sent.complete:
        ctx.result = "error"
    return sent.response


async def tags(request: web.Request) -> web.Response:
    """`GET /v2/<name>/tags/list`, relayed from upstream with `n` and `last`."""
    ctx = context(request)
    ctx.kind, ctx.result = "tags", "miss"
    proxy, name = _route(request)
    body, headers = await proxy.tags(name, request.query)
    try:
        json.loads(body)
    except ValueError:
        raise errors.UpstreamBadGateway("upstream tag list is not JSON") from None
    ctx.source, ctx.bytes_sent = "upstream", len(body)
    headers.setdefault("Content-Type", "application/json")
    return web.Response(body=body, headers=headers)


async def fallback(request: web.Request) -> web.Response:
    """Anything else under /v2/: writes (push, delete) are unsupported by a mirror; reads are unknown."""
    if request.method in ("GET", "HEAD"):
        raise errors.NotFound(f"no registry endpoint at {request.path[:300]!r}")
    context(request).kind = "write"
    raise errors.Unsupported(f"{request.method} is not supported: this mirror only serves pulls")


def _route(request: web.Request) -> tuple[RegistryProxy, str]:
    """The proxy of the upstream serving this request and the repository name to ask it for."""
    ns = request.query.get("ns")
    target = request.app[keys.ROUTER].route(oci.parse_name(request.match_info["name"]), ns)
    ctx = context(request)
    ctx.upstream, ctx.namespace = target.upstream, ns
    return request.app[keys.PROXIES][target.upstream], target.name
