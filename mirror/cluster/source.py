"""Where a shared-mode fill gets a blob: a peer holding it, the peer filling it, or the upstream.

`ClusterSource` is a `BlobSource` like the upstream client itself, so fills read it unchanged. Each time
a fill opens a body (at the start, and again from its offset when a body broke off) it asks Redis once:

- peers that hold the blob are asked first, each dropped from the hints after one failure;
- else, if another replica holds the fill lease, its growing file is streamed (any offset, Range);
  if that replica does not answer, the fill waits for its lease to expire (`lease_ttl`), polling;
- else this replica took the lease, renews it while the fill runs, and reads from the upstream;
- when Redis cannot be asked, the upstream, as without Redis.

A peer whose bytes turn out wrong (the fill fails on digest or size) is dropped from the hints too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from mirror.cluster.coordinator import Coordinator
from mirror.cluster.peers import PeerClient, PeerFailed
from mirror.fills import Fill, Fills, reason_of
from mirror.metrics import Metrics
from mirror.upstream.transport import BlobBody, BlobSource

log = structlog.get_logger("mirror.cluster")

#: Seconds between claims while waiting for the lease of a filling replica that does not answer.
LEASE_POLL = 0.25
#: A fill waits at most this many lease TTLs for a silent filler's lease, then goes upstream anyway
#: (a lease that never expires means Redis is not to be trusted, and Redis may cost bandwidth only).
LEASE_PATIENCE = 2


class Cluster:
    """The shared fill state of one replica: its leases, the peers failed per fill, and the tasks
    that renew leases and judge peers while fills run (cancelled by `close`)."""

    def __init__(self, coordinator: Coordinator, peers: PeerClient, fills: Fills, metrics: Metrics) -> None:
        self._coordinator = coordinator
        self._peers = peers
        self._fills = fills
        self._metrics = metrics
        self._tokens: dict[str, str] = {}  # digest → token of the lease this replica holds
        self._failed: dict[str, set[str]] = {}  # digest → peers that failed during this fill
        self._last_peer: dict[str, tuple[str, str]] = {}  # digest → (peer, source) of the current body
        self._watches: dict[str, asyncio.Task[None]] = {}

    def leased(self, digest: str) -> bool:
        """Whether this replica holds the fill lease of `digest`."""
        return digest in self._tokens

    def source(self, upstream: BlobSource) -> ClusterSource:
        return ClusterSource(self, upstream)

    async def open_blob(self, upstream: BlobSource, name: str, digest: str, offset: int) -> BlobBody:
        """A body for the fill of `digest` from `offset`, from the best source there is now."""
        self._watch(digest)
        if (previous := self._last_peer.pop(digest, None)) is not None:  # its body broke off
            await self._failed_peer(digest, *previous, reason="broken")
        started = time.monotonic()
        deadline = started + LEASE_PATIENCE * self._coordinator.lease_ttl
        try:
            while True:
                if digest in self._tokens:  # this replica fills it: resume from upstream
                    return await self._from_upstream(upstream, name, digest, offset)
                claim = await self._coordinator.claim(digest)
                if claim.token is not None:
                    self._tokens[digest] = claim.token
                    return await self._from_upstream(upstream, name, digest, offset)
                if not claim.peers and claim.owner is None:  # Redis could not be asked
                    return await self._from_upstream(upstream, name, digest, offset)
                failed = self._failed.setdefault(digest, set())
                fresh = [p for p in claim.peers if p not in failed]
                for peer in fresh:
                    if body := await self._peer(peer, digest, offset, "held"):
                        return body
                owner = claim.owner
                if (
                    owner is not None
                    and owner not in failed
                    and (body := await self._peer(owner, digest, offset, "filling"))
                ):
                    return body
                if time.monotonic() >= deadline:
                    log.warning("lease_wait_gave_up", digest=digest, owner=owner)
                    return await self._from_upstream(upstream, name, digest, offset)
                if owner is not None or not fresh:  # its lease expires within lease_ttl
                    await asyncio.sleep(LEASE_POLL)
        finally:
            if (waited := time.monotonic() - started) >= LEASE_POLL:
                self._metrics.lease_waits.observe(waited)

    async def _from_upstream(self, upstream: BlobSource, name: str, digest: str, offset: int) -> BlobBody:
        self._last_peer.pop(digest, None)
        self._metrics.cluster_fills.labels("upstream").inc()
        return await upstream.open_blob(name, digest, offset)

    async def _peer(self, peer: str, digest: str, offset: int, source: str) -> BlobBody | None:
        """The body from `peer`, or None after dropping it (it failed once)."""
        try:
            body = await self._peers.open_blob(peer, digest, offset, source)
        except PeerFailed as exc:
            await self._failed_peer(digest, peer, source, exc.reason, str(exc))
            return None
        self._last_peer[digest] = (peer, source)
        self._metrics.cluster_fills.labels(source).inc()
        return body

    async def _failed_peer(self, digest: str, peer: str, source: str, reason: str, detail: str = "") -> None:
        """Count the failure, never ask `peer` again during this fill, and if it was a hint, drop it."""
        self._metrics.peer_failures.labels(reason).inc()
        log.warning("peer_failed", digest=digest, peer=peer, reason=reason, detail=detail)
        self._failed.setdefault(digest, set()).add(peer)
        if source == "held":
            await self._coordinator.drop(digest, peer)

    def _watch(self, digest: str) -> None:
        fill = self._fills.get(digest)
        if fill is not None and digest not in self._watches:
            task = asyncio.create_task(self._follow(digest, fill), name=f"lease {digest}")
            self._watches[digest] = task

    async def _follow(self, digest: str, fill: Fill) -> None:
        """While the fill runs, renew this replica's lease; when it ends, release the lease (announcing
        the blob if committed) and drop a peer whose bytes were wrong."""
        try:
            while not fill.done.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._coordinator.lease_ttl / 3):
                        await fill.done.wait()
                token = self._tokens.get(digest)
                if token is not None and not fill.done.is_set():
                    await self._coordinator.renew(digest, token)
            token = self._tokens.pop(digest, None)
            if token is not None:
                await self._coordinator.release(digest, token, held=fill.error is None)
            last = self._last_peer.pop(digest, None)
            reason = reason_of(fill.error) if fill.error is not None else None
            if last is not None and reason in ("digest_mismatch", "size_mismatch"):
                assert reason is not None
                await self._failed_peer(digest, last[0], "held", reason)  # wrong bytes: never a hint again
        finally:
            self._tokens.pop(digest, None)
            self._failed.pop(digest, None)
            self._last_peer.pop(digest, None)
            self._watches.pop(digest, None)

    async def close(self) -> None:
        """Cancel the lease tasks (after the fills ended, they have released their leases)."""
        tasks = list(self._watches.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._peers.close()


class ClusterSource:
    """The `BlobSource` of one upstream in the shared mode."""

    def __init__(self, cluster: Cluster, upstream: BlobSource) -> None:
        self._cluster = cluster
        self._upstream = upstream

    @property
    def label(self) -> str:
        return self._upstream.label

    async def open_blob(self, name: str, digest: str, offset: int = 0, end: int | None = None) -> BlobBody:
        """A bounded range (a fill's side stream, or its main stream between them) comes from the
        upstream while this replica fills the blob itself; otherwise the peers' bodies run to the end."""
        if end is not None and self._cluster.leased(digest):
            return await self._upstream.open_blob(name, digest, offset, end)
        return await self._cluster.open_blob(self._upstream, name, digest, offset)
