"""The shared mode's parts, opened together: the Redis coordinator, the hint registrar, the peer client
and the fill-source logic. `create_app` makes one when `redis_url` is set and knows nothing else of it."""

from __future__ import annotations

import contextlib

from mirror.cluster.coordinator import Coordinator
from mirror.cluster.hints import Registrar
from mirror.cluster.once import SharedFetches
from mirror.cluster.peers import PeerClient
from mirror.cluster.source import Cluster
from mirror.config import Settings
from mirror.fills import Fills
from mirror.metrics import Metrics
from mirror.storage.blobs import BlobStore
from mirror.upstream.transport import BlobSource


class SharedMode:
    """Built before the fills (whose commits it announces), opened once they exist."""

    def __init__(self, settings: Settings, metrics: Metrics, store: BlobStore) -> None:
        assert settings.redis_url is not None, "SharedMode without redis_url"
        assert settings.advertise_url is not None, "config requires advertise_url with redis_url"
        self._settings = settings
        self._metrics = metrics
        self.coordinator = Coordinator(
            settings.redis_url,
            settings.advertise_url,
            metrics,
            timeout=settings.redis_timeout,
            cooldown=settings.redis_cooldown,
            lease_ttl=settings.lease_ttl,
            hint_ttl=settings.peer_hint_ttl,
        )
        self._registrar = Registrar(self.coordinator, store.digests)
        self.fetches = SharedFetches(self.coordinator, metrics)
        self._cluster: Cluster | None = None

    def committed(self, digest: str) -> None:
        """A blob was committed into the store: announce it with the next batch, unless this replica
        filled it under its lease (releasing the lease announces it, in the same step)."""
        if self._cluster is None or not self._cluster.leased(digest):
            self._registrar.add(digest)

    async def open(self, stack: contextlib.AsyncExitStack, fills: Fills) -> None:
        """Connect (lazily: Redis need not be up) and start announcing; `stack` closes it all."""
        await stack.enter_async_context(self.coordinator)
        self._registrar.start()
        stack.push_async_callback(self._registrar.close)
        assert self._settings.peer_secret is not None
        peers = PeerClient(self._settings.peer_secret, self._metrics, self._settings.read_timeout)
        self._cluster = Cluster(self.coordinator, peers, fills, self._metrics)
        stack.push_async_callback(self._cluster.close)

    def source(self, upstream: BlobSource) -> BlobSource:
        """Where fills of `upstream`'s blobs get their bytes: peers first, then `upstream`."""
        assert self._cluster is not None, "SharedMode.source before open"
        return self._cluster.source(upstream)
