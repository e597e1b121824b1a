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


def test_proxy_environment_and_keys_make_each_upstreams_rules(tmp_path: Path) -> None:
    """http(s)_proxy/no_proxy are every upstream's rules, unless its proxy key overrides them."""
    path = tmp_path / "m.toml"
    path.write_text(
        '[[upstreams]]\nregistry = "ghcr.io"\nproxy = "http://other.corp:8080"\n'
        '[[upstreams]]\nregistry = "internal.corp"\nproxy = ""\n'
        '[[upstreams]]\nregistry = "quay.io"\n'
    )
    environ = {"HTTPS_PROXY": "http://proxy.corp:3128", "no_proxy": ".corp"}
    hub, ghcr, internal, quay = load({}, environ, path).registries()
    assert str(hub.egress.https) == "http://proxy.corp:3128"
    assert str(ghcr.egress.https) == str(ghcr.egress.http) == "http://other.corp:8080"
    assert internal.egress.https is None
    assert quay.egress == hub.egress
    assert hub.egress.no_proxy == (".corp",)


def test_top_level_proxy_is_docker_hubs() -> None:
    """MIRROR_PROXY (top-level proxy) applies to Docker Hub only."""
    settings = load({}, {"MIRROR_PROXY": "proxy.corp:3128", "https_proxy": "other.corp:8080"})
    assert str(settings.registries()[0].egress.https) == "http://proxy.corp:3128"


def test_proxy_credentials_masked_in_print_config_and_errors(tmp_path: Path) -> None:
    """--print-config shows proxy credentials as ***; a bad proxy value with credentials is not echoed."""
    path = tmp_path / "m.toml"
    path.write_text('[[upstreams]]\nregistry = "ghcr.io"\nproxy = "http://u:hunter2@p.corp:3128"\n')
    environ = {"MIRROR_PROXY": "http://u:hunter2@p.corp:3128", "http_proxy": "http://u:hunter2@q.corp:1"}
    shown = str(load({}, environ, path).redacted())
    assert "hunter2" not in shown
    assert "http://***@p.corp:3128" in shown
    with pytest.raises(ConfigError) as caught:
        load({}, {"MIRROR_PROXY": "https://u:hunter2@p.corp:3128"})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="http_proxy"):
        load({}, {"http_proxy": "socks5://p.corp:1080"})


def test_client_mode_and_the_mirrors_own_password_auth_exclude_each_other(tmp_path: Path) -> None:
    """One Authorization header cannot carry both the mirror's and the upstream's credentials."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    with pytest.raises(ConfigError, match="tls_client_ca"):
        load({}, {"MIRROR_UPSTREAM_AUTH": "client", "MIRROR_AUTH_HTPASSWD": str(htpasswd)})
