"""The peer endpoint of the shared mode: another replica asks for a blob this one holds or is filling.

It serves only that (from the store, or from the growing file of a fill under way, any offset, Range),
only to requests signed with the peer secret, and never goes upstream: a blob it lacks is a 404.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from mirror import errors, keys, oci
from mirror.answers import BlobAnswer, Filling, Stored
from mirror.cluster import peerauth
from mirror.middlewares import context
from mirror.transfer import send_blob

#: The path peers are asked at (outside /v2/, so no registry route can ever shadow it).
PATH = "/_mirror/peer/blobs/{digest}"


async def blob(request: web.Request) -> web.StreamResponse:
    """`GET /_mirror/peer/blobs/<digest>`, signed (`X-Mirror-Peer`), with a single byte Range."""
    ctx = context(request)
    ctx.kind = "peer"
    app = request.app
    settings, metrics = app[keys.SETTINGS], app[keys.METRICS]
    if keys.COORDINATOR not in app or settings.peer_secret is None:
        raise errors.NotFound("this mirror is not in the shared mode")
    signed = peerauth.verify(
        settings.peer_secret,
        request.headers.get(peerauth.HEADER),
        request.method,
        request.path,
        request.headers.get("Range", ""),
        time.time(),
    )
    if not signed:
        metrics.peer_served.labels("unauthorized").inc()
        raise errors.Unauthorized("peer credential missing, invalid or expired")
    digest = str(oci.Digest.parse(request.match_info["digest"]))
    found = await _held_or_filling(app, digest)
    if found is None:
        ctx.result = "miss"
        metrics.peer_served.labels("missing").inc()
        raise errors.BlobUnknown("this replica neither holds nor is filling the blob")
    answer, served = found
    ctx.result = answer.result
    metrics.peer_served.labels(served).inc()
    try:
        sent = await send_blob(request, answer, digest)
    finally:
        answer.close()
    ctx.bytes_sent = sent.count
    metrics.peer_served_bytes.inc(sent.count)
    if not sent.complete:
        ctx.result = "error"
    return sent.response


async def _held_or_filling(app: web.Application, digest: str) -> tuple[BlobAnswer, str] | None:
    """The fill under way for `digest` (acquired), else the stored blob (opened), else None; with the
    `result` label of `mirror_peer_served_total`."""
    fill = app[keys.FILLS].get(digest)
    if fill is not None:
        fill.acquire()
        try:
            await fill.ready.wait()
        except BaseException:  # the peer hung up before the headers: let go of the fill
            fill.release()
            raise
        if fill.size is not None or fill.error is None:
            return BlobAnswer("coalesced", fill.size, Filling(fill)), "fill"
        fill.release()  # it failed before headers: nothing to read
    stored = await asyncio.to_thread(app[keys.STORE].open, digest)
    if stored is None:
        return None
    return BlobAnswer("hit", stored.size, Stored(stored, app[keys.VERIFIER].check_for(stored))), "store"
