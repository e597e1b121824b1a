"""Runtime: the components opened at start-up (in `app.cleanup_ctx`) and closed at shutdown.

The app is frozen before start-up runs, so components are attached to this holder, created empty by
`create_app`, rather than to the app itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.fills import Fills
from mirror.proxy import RegistryProxy
from mirror.routing import Router, Target
from mirror.storage.blobs import BlobStore


class NotStarted(RuntimeError):
    """A component was used before start-up finished or after shutdown."""


@dataclass
class Runtime:
    _proxies: dict[str, RegistryProxy] | None = None
    _router: Router | None = None
    _store: BlobStore | None = None
    _fills: Fills | None = None
    ready: bool = False

    def proxy_for(self, target: Target) -> RegistryProxy:
        """The proxy of the upstream a routed request targets."""
        if self._proxies is None:
            raise NotStarted("the registry proxy is not running")
        return self._proxies[target.upstream]

    def upstream_status(self) -> dict[str, dict[str, object]]:
        """Breaker state and rate-limit budget per upstream."""
        proxies = self._proxies or {}
        return {label: proxy.upstream.health.status() for label, proxy in proxies.items()}

    @property
    def router(self) -> Router:
        if self._router is None:
            raise NotStarted("the router is not set up")
        return self._router

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            raise NotStarted("the blob store is not open")
        return self._store

    @property
    def fills(self) -> Fills:
        if self._fills is None:
            raise NotStarted("no fills registry")
        return self._fills

    def attach(
        self, proxies: dict[str, RegistryProxy], router: Router, store: BlobStore, fills: Fills
    ) -> None:
        self._proxies, self._router, self._store, self._fills = proxies, router, store, fills
        self.ready = True

    def detach(self) -> None:
        self._proxies, self._router, self._store, self._fills = None, None, None, None
        self.ready = False
