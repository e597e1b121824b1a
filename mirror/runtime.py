"""Runtime: the components opened at start-up (in `app.cleanup_ctx`) and closed at shutdown.

The app is frozen before start-up runs, so components are attached to this holder, created empty by
`create_app`, rather than to the app itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.fills import Fills
from mirror.pins import Pins
from mirror.proxy import RegistryProxy
from mirror.referrer_proxy import ReferrerProxy
from mirror.routing import Router, Target
from mirror.storage.blobs import BlobStore
from mirror.tag_lists import TagLists


class NotStarted(RuntimeError):
    """A component was used before start-up finished or after shutdown."""


@dataclass(frozen=True)
class Components:
    proxies: dict[str, RegistryProxy]
    router: Router
    store: BlobStore
    fills: Fills
    pins: Pins
    referrers: dict[str, ReferrerProxy]
    tag_lists: dict[str, TagLists]


class Runtime:
    """Access to the running components; `ready` once start-up recovery is done."""

    def __init__(self) -> None:
        self._components: Components | None = None

    @property
    def ready(self) -> bool:
        return self._components is not None

    @property
    def components(self) -> Components:
        if self._components is None:
            raise NotStarted("the mirror is not running")
        return self._components

    def attach(self, components: Components) -> None:
        self._components = components

    def detach(self) -> None:
        self._components = None

    def proxy_for(self, target: Target) -> RegistryProxy:
        """The proxy of the upstream a routed request targets."""
        return self.components.proxies[target.upstream]

    def referrers_for(self, target: Target) -> ReferrerProxy:
        """The referrers service of the upstream a routed request targets."""
        return self.components.referrers[target.upstream]

    def tag_lists_for(self, target: Target) -> TagLists:
        """The tag-list service of the upstream a routed request targets."""
        return self.components.tag_lists[target.upstream]

    @property
    def router(self) -> Router:
        return self.components.router

    @property
    def store(self) -> BlobStore:
        return self.components.store

    @property
    def fills(self) -> Fills:
        return self.components.fills

    @property
    def pins(self) -> Pins:
        return self.components.pins

    def upstream_status(self) -> dict[str, dict[str, object]]:
        """Breaker state and rate-limit budget per upstream."""
        proxies = self._components.proxies if self._components else {}
        return {label: proxy.upstream.health.status() for label, proxy in proxies.items()}
