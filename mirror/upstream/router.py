"""Which upstream serves a request, and under which repository name. Pure: no I/O.

In order: containerd's `?ns=<registry>` (only configured registries: any other name is refused without
an outbound connection); a path prefix naming a configured registry or alias (`/v2/ghcr.io/owner/repo/...`,
for podman/CRI-O mirror locations with a path); else the default upstream, Docker Hub, where
one-component names get `library/`. A target the upstream's allow and deny lists refuse is `RepositoryRefused`
here, before any upstream is asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mirror import errors, oci
from mirror.config import UpstreamSettings
from mirror.oci import DOCKER_IO, DOCKER_IO_NAMES
from mirror.upstream.repository_lists import RepositoryLists, RepositoryRefused


@dataclass(frozen=True, slots=True)
class Target:
    """The upstream (registry host) to ask and the repository name to ask it for."""

    upstream: str
    name: str


class Router:
    """Routes repository names (already validated) and `ns` values to configured upstreams."""

    def __init__(self, upstreams: Iterable[UpstreamSettings]) -> None:
        self._by_host: dict[str, str] = {name: DOCKER_IO for name in DOCKER_IO_NAMES}
        self._by_prefix: dict[str, str] = {DOCKER_IO: DOCKER_IO}
        self._lists: dict[str, RepositoryLists] = {}
        for upstream in upstreams:
            self._lists[upstream.registry] = RepositoryLists(upstream.allow, upstream.deny)
            self._by_host[upstream.registry] = upstream.registry
            for prefix in (upstream.registry, *upstream.aliases):
                self._by_prefix[prefix] = upstream.registry

    def route(self, name: str, ns: str | None) -> Target:
        """The target of a request for repository `name`, with containerd's `ns` if it sent one."""
        if ns is not None:
            upstream = self._by_host.get(ns.lower())
            if upstream is None:
                raise errors.NameUnknown(f"registry {ns[:200]!r} is not mirrored here")
            return self._target(upstream, name)
        first, sep, rest = name.partition("/")
        upstream = self._by_prefix.get(first) if sep else None
        if upstream is not None:
            return self._target(upstream, rest)
        return self._target(DOCKER_IO, name)

    def _target(self, upstream: str, name: str) -> Target:
        target = Target(upstream, oci.docker_hub_name(name) if upstream == DOCKER_IO else name)
        lists = self._lists.get(upstream)
        if lists is not None and not lists.permits(target.name):
            raise RepositoryRefused(upstream, target.name)
        return target
