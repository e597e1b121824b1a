"""Configuration of allow and deny lists, per-client upstream authorization and the egress proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.config import ConfigError, load


def test_allow_and_deny_from_env_are_docker_hubs() -> None:
    """MIRROR_ALLOW and MIRROR_DENY (comma-separated) are Docker Hub's lists."""
    settings = load({}, {"MIRROR_ALLOW": "library/*, team/**", "MIRROR_DENY": "library/ubuntu"})
    hub = settings.registries()[0]
    assert hub.allow == ("library/*", "team/**")
    assert hub.deny == ("library/ubuntu",)


def test_allow_and_deny_per_upstream_table(tmp_path: Path) -> None:
    """An [[upstreams]] table has its own allow and deny lists."""
    path = tmp_path / "m.toml"
    path.write_text('[[upstreams]]\nregistry = "ghcr.io"\nallow = ["acme/*"]\ndeny = ["acme/secret"]\n')
    ghcr = load({}, {}, path).registries()[1]
    assert (ghcr.allow, ghcr.deny) == (("acme/*",), ("acme/secret",))


def test_docker_hub_pattern_without_namespace_is_an_error() -> None:
    """`alpine` can never match a Docker Hub name (library/alpine): the error says what to write."""
    with pytest.raises(ConfigError, match="library/alpine"):
        load({}, {"MIRROR_DENY": "alpine"})


def test_bad_pattern_is_named() -> None:
    """A pattern that is no repository name is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="MIRROR_ALLOW"):
        load({}, {"MIRROR_ALLOW": "Library/Alpine"})


def test_upstream_auth_client_from_env_and_per_table(tmp_path: Path) -> None:
    """MIRROR_UPSTREAM_AUTH=client sets Docker Hub's mode; a table has its own, default mirror."""
    path = tmp_path / "m.toml"
    path.write_text(
        "upstream_auth_ttl = 30\nupstream_auth_denied_ttl = 5\n"
        '[[upstreams]]\nregistry = "ghcr.io"\nupstream_auth = "client"\n'
        '[[upstreams]]\nregistry = "quay.io"\n'
    )
    settings = load({}, {"MIRROR_UPSTREAM_AUTH": "client"}, path)
    assert [u.upstream_auth for u in settings.registries()] == ["client", "client", "mirror"]
    assert (settings.upstream_auth_ttl, settings.upstream_auth_denied_ttl) == (30, 5)


def test_upstream_auth_defaults() -> None:
    """By default the mirror's own credentials serve everyone; decisions last 60 s, denials 10 s."""
    settings = load({}, {})
    assert settings.registries()[0].upstream_auth == "mirror"
    assert (settings.upstream_auth_ttl, settings.upstream_auth_denied_ttl) == (60, 10)


def test_bad_upstream_auth_is_named() -> None:
    """Only mirror and client are modes."""
    with pytest.raises(ConfigError, match="MIRROR_UPSTREAM_AUTH"):
        load({}, {"MIRROR_UPSTREAM_AUTH": "passthrough"})
