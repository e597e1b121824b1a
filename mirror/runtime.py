"""Runtime: the components opened at start-up (in `app.cleanup_ctx`) and closed at shutdown.

The app is frozen before start-up runs, so components are attached to this holder, created empty by
`create_app`, rather than to the app itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.proxy import RegistryProxy
from mirror.storage.blobs import BlobStore


class NotStarted(RuntimeError):
    """A component was used before start-up finished or after shutdown."""


@dataclass
class Runtime:
    _proxy: RegistryProxy | None = None
    _store: BlobStore | None = None
    ready: bool = False

    @property
    def proxy(self) -> RegistryProxy:
        if self._proxy is None:
            raise NotStarted("the registry proxy is not running")
        return self._proxy

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            raise NotStarted("the blob store is not open")
        return self._store

    def attach(self, proxy: RegistryProxy, store: BlobStore) -> None:
        self._proxy, self._store, self.ready = proxy, store, True

    def detach(self) -> None:
        self._proxy, self._store, self.ready = None, None, False
