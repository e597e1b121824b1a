"""Routing of repository names and containerd `ns` values to configured upstreams."""

from __future__ import annotations

import pytest

from mirror import errors
from mirror.config import UpstreamSettings
from mirror.upstream.repository_lists import RepositoryRefused
from mirror.upstream.router import Router, Target

ROUTER = Router(
    [
        UpstreamSettings("docker.io", "https://registry-1.docker.io", aliases=("dockerhub",)),
        UpstreamSettings("ghcr.io", "https://ghcr.io", aliases=("ghcr",)),
        UpstreamSettings("registry.k8s.io", "https://registry.k8s.io"),
        UpstreamSettings("registry.local:5000", "http://10.0.0.1:5000", aliases=("local",)),
    ]
)


@pytest.mark.parametrize(
    ("name", "ns", "expected"),
    [
        ("alpine", None, Target("docker.io", "library/alpine")),
        ("bitnami/redis", None, Target("docker.io", "bitnami/redis")),
        ("alpine", "docker.io", Target("docker.io", "library/alpine")),
        ("library/alpine", "index.docker.io", Target("docker.io", "library/alpine")),
        ("owner/app", "ghcr.io", Target("ghcr.io", "owner/app")),
        ("owner/app", "GHCR.IO", Target("ghcr.io", "owner/app")),
        ("pause", "registry.k8s.io", Target("registry.k8s.io", "pause")),
        ("team/app", "registry.local:5000", Target("registry.local:5000", "team/app")),
        ("ghcr.io/owner/app", None, Target("ghcr.io", "owner/app")),
        ("ghcr/owner/app", None, Target("ghcr.io", "owner/app")),
        ("registry.k8s.io/pause", None, Target("registry.k8s.io", "pause")),
        ("docker.io/alpine", None, Target("docker.io", "library/alpine")),
        ("dockerhub/library/alpine", None, Target("docker.io", "library/alpine")),
        ("local/team/app", None, Target("registry.local:5000", "team/app")),
        ("quay.io/owner/app", None, Target("docker.io", "quay.io/owner/app")),
        ("ghcr.io", None, Target("docker.io", "library/ghcr.io")),
    ],
)
def test_route(name: str, ns: str | None, expected: Target) -> None:
    """ns first, then a configured path prefix, else Docker Hub with library/ for one component."""
    assert ROUTER.route(name, ns) == expected


@pytest.mark.parametrize(
    "ns",
    ["quay.io", "evil.example.com", "127.0.0.1:5000", "user:pw@ghcr.io", "ghcr.io/", "ghcr", "", "localhost"],
)
def test_unconfigured_namespace_is_refused(ns: str) -> None:
    """An ns naming no configured registry (aliases are not registry names) answers NAME_UNKNOWN."""
    with pytest.raises(errors.NameUnknown):
        ROUTER.route("owner/app", ns)


GUARDED = Router(
    [
        UpstreamSettings(
            "docker.io", "https://registry-1.docker.io", allow=("library/*",), deny=("library/bad",)
        ),
        UpstreamSettings("ghcr.io", "https://ghcr.io", deny=("secret/**",)),
    ]
)


@pytest.mark.parametrize(
    ("name", "ns"),
    [("bad", None), ("library/bad", "docker.io"), ("bitnami/redis", None), ("ghcr.io/secret/x/y", None)],
)
def test_refused_repository_is_denied_with_its_upstream(name: str, ns: str | None) -> None:
    """A name the lists refuse, after library/ and prefixes are applied, is DENIED naming its upstream."""
    with pytest.raises(RepositoryRefused) as caught:
        GUARDED.route(name, ns)
    assert caught.value.code == "DENIED"
    assert caught.value.upstream == ("ghcr.io" if "secret" in name else "docker.io")


def test_permitted_repository_routes() -> None:
    """Names the lists permit route as before."""
    assert GUARDED.route("alpine", None) == Target("docker.io", "library/alpine")
    assert GUARDED.route("ghcr.io/owner/app", None) == Target("ghcr.io", "owner/app")
