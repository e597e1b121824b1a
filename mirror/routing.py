"""Which upstream serves a request. containerd names the source registry in `?ns=`; only registries this
mirror is configured for are served, and any other name is refused without an outbound connection."""

from __future__ import annotations

from mirror import errors

#: Names containerd and users give Docker Hub; the default upstream stands for all of them.
DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def check_namespace(ns: str | None) -> None:
    """Accept requests without `ns` or for Docker Hub; refuse every other registry name."""
    if ns is None or ns.lower() in DOCKER_HUB_NAMES:
        return
    raise errors.NameUnknown(f"registry {ns[:200]!r} is not mirrored here")
