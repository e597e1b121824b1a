"""Peers: blob bodies from other replicas, over the same threaded transport as upstream blob bodies.

A peer is asked at its advertise URL with a signed request (`peerauth`); its answer is a `BlobBody`
like an upstream's, so the fill that reads it neither knows nor cares. Anything but a 200/206 with the
body is a failure with a reason, and the caller drops that peer.
"""

from __future__ import annotations

import time

from yarl import URL

from mirror.cluster import peerauth
from mirror.metrics import Metrics
from mirror.upstream.threaded import ThreadedTransport
from mirror.upstream.transport import BlobBody, CountedBody, TransportError

#: Seconds to connect to a peer: peers are on the same network, so a replica that does not accept
#: within a second is as good as gone (a dead pod's IP often just drops packets).
PEER_CONNECT_TIMEOUT = 1.0


class PeerFailed(Exception):
    """A peer could not give the blob; `reason` is the `mirror_peer_failures_total` label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class PeerClient:
    """Signed blob requests to peer replicas; owns its transport (closed by `close`)."""

    def __init__(self, secret: str, metrics: Metrics, read_timeout: float) -> None:
        self._secret = secret
        self._metrics = metrics
        self._transport = ThreadedTransport(PEER_CONNECT_TIMEOUT, read_timeout)

    async def open_blob(self, peer: str, digest: str, offset: int, source: str) -> BlobBody:
        """The blob's body from `peer` (its advertise URL), from `offset`; raises PeerFailed.
        `source` says why it is asked: it holds the blob (held) or is filling it (filling)."""
        self._metrics.peer_requests.labels(source).inc()
        url = URL(peer).join(URL(f"/_mirror/peer/blobs/{digest}"))
        range_header = f"bytes={offset}-" if offset else ""
        headers = {"Range": range_header} if range_header else {}
        headers[peerauth.HEADER] = peerauth.sign(self._secret, "GET", url.path, range_header, time.time())
        try:
            resp = await self._transport.send("GET", url, headers)
        except TransportError as exc:
            raise PeerFailed("unreachable", f"peer {peer}: {exc}") from None
        if resp.status not in (200, 206):
            resp.release()
            raise PeerFailed("refused", f"peer {peer} answered {resp.status}")
        return CountedBody(resp, self._metrics.peer_bytes.inc)

    async def close(self) -> None:
        await self._transport.close()
