"""Handlers of the registry API (pull side): parse the request, ask the proxy, shape the response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from mirror import errors, keys, oci
from mirror.access.middleware import upstream_authorization
from mirror.middlewares import context
from mirror.oci import DOCKER_IO
from mirror.proxy import RegistryProxy
from mirror.referrers import ARTIFACT_TYPE_FILTER
from mirror.transfer import blob_headers, send_blob
from mirror.upstream.clientauth import unauthorized
from mirror.upstream.repository_lists import RepositoryRefused
from mirror.upstream.router import Target


async def base(request: web.Request) -> web.Response:
    """`GET /v2/`: the API version check every client starts with."""
    context(request).kind = "base"
    if DOCKER_IO in request.app[keys.GATES] and upstream_authorization(request) is None:
        # Docker and skopeo learn where to log in from this ping: Docker Hub's own challenge.
        challenge = await request.app[keys.PROXIES][DOCKER_IO].upstream.challenge()
        if challenge:
            raise unauthorized(challenge)
    return web.json_response({})


async def manifest(request: web.Request) -> web.Response:
    """`GET`/`HEAD /v2/<name>/manifests/<tag|digest>`."""
    ctx = context(request)
    ctx.kind = "manifest"
    reference = str(oci.parse_reference(request.match_info["reference"]))
    proxy, name = _route(request, reference)
    every_type = list(oci.MANIFEST_TYPES)
    await _admit(request, name, lambda: proxy.upstream.head_manifest(name, reference, every_type))
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
    proxy, name = _route(request, digest)
    await _admit(request, name, lambda: proxy.upstream.head_blob(name, digest))
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
    """`GET /v2/<name>/tags/list` with `n` and `last`: cached, revalidated, stale when upstream fails."""
    ctx = context(request)
    ctx.kind = "tags"
    target = _target(request)
    upstream = request.app[keys.PROXIES][target.upstream].upstream
    await _admit(request, target.name, lambda: upstream.tags(target.name, {"n": "1"}))
    service = request.app[keys.TAG_LISTS][target.upstream]
    answer = await service.tags(target.name, request.query, request.path)
    ctx.result, ctx.bytes_sent = answer.result, len(answer.body)
    ctx.source = "upstream" if answer.result in ("miss", "coalesced") else "cache"
    headers = {"Link": answer.link} if answer.link else {}
    return web.Response(body=answer.body, content_type="application/json", headers=headers)


async def referrers(request: web.Request) -> web.Response:
    """`GET /v2/<name>/referrers/<digest>[?artifactType=T]`: an OCI index of the digest's referrers."""
    ctx = context(request)
    ctx.kind = "referrers"
    digest = oci.Digest.parse(request.match_info["digest"])
    target = _target(request)
    upstream = request.app[keys.PROXIES][target.upstream].upstream
    every_type = list(oci.MANIFEST_TYPES)
    await _admit(request, target.name, lambda: upstream.head_manifest(target.name, str(digest), every_type))
    service = request.app[keys.REFERRERS][target.upstream]
    answer = await service.referrers(target.name, digest, request.query.get("artifactType") or None)
    ctx.result, ctx.bytes_sent = answer.result, len(answer.body)
    ctx.source = "upstream" if answer.result in ("miss", "coalesced") else "cache"
    headers = {"OCI-Filters-Applied": ARTIFACT_TYPE_FILTER} if answer.filtered else {}
    return web.Response(body=answer.body, content_type=oci.OCI_INDEX, headers=headers)


async def fallback(request: web.Request) -> web.Response:
    """Anything else under /v2/: writes (push, delete) are unsupported by a mirror; reads are unknown."""
    if request.method in ("GET", "HEAD"):
        raise errors.NotFound(f"no registry endpoint at {request.path[:300]!r}")
    context(request).kind = "write"
    raise errors.Unsupported(f"{request.method} is not supported: this mirror only serves pulls")


def _route(request: web.Request, reference: str | None = None) -> tuple[RegistryProxy, str]:
    """The proxy of the upstream serving this request and the repository name to ask it for."""
    target = _target(request, reference)
    return request.app[keys.PROXIES][target.upstream], target.name


def _target(request: web.Request, reference: str | None = None) -> Target:
    """The upstream serving this request and the repository name to ask it for; the image asked for
    (`registry/name:tag` or `registry/name@digest`) goes to the request's log line."""
    ns = request.query.get("ns")
    ctx = context(request)
    ctx.namespace = ns
    try:
        target = request.app[keys.ROUTER].route(oci.parse_name(request.match_info["name"]), ns)
    except RepositoryRefused as exc:
        ctx.upstream = exc.upstream
        request.app[keys.METRICS].refused.labels(exc.upstream, ctx.kind).inc()
        raise
    ctx.upstream = target.upstream
    ctx.image = f"{target.upstream}/{target.name}"
    if reference is not None:
        ctx.image += ("@" if ":" in reference else ":") + reference
    return target


async def _admit(request: web.Request, name: str, probe: Callable[[], Awaitable[object]]) -> None:
    """For an upstream in client mode: go on only if the upstream lets this client pull `name`."""
    gate = request.app[keys.GATES].get(context(request).upstream)
    if gate is not None:
        await gate.admit(upstream_authorization(request), name, probe)
