"""The egress proxy decision: environment, per-upstream override, NO_PROXY forms. Pure."""

from __future__ import annotations

import pytest
from yarl import URL

from mirror.upstream.egress import DIRECT, Proxy, ProxyRules, bypasses, from_environ, parse_proxy

PROXY = Proxy("proxy.corp", 3128)
OTHER = Proxy("other.corp", 8080)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://proxy.corp:3128", Proxy("proxy.corp", 3128)),
        ("proxy.corp:3128", Proxy("proxy.corp", 3128)),
        ("http://proxy.corp", Proxy("proxy.corp", 1080)),
        ("http://proxy.corp:3128/", Proxy("proxy.corp", 3128)),
        ("http://user:p%40ss@proxy.corp:3128", Proxy("proxy.corp", 3128, "user", "p@ss")),
        ("http://[fd00::1]:3128", Proxy("fd00::1", 3128)),
        ("", None),
        ("  ", None),
    ],
)
def test_parse_proxy(value: str, expected: Proxy | None) -> None:
    """http proxy URLs, scheme optional, port 1080 by default, credentials percent-decoded; "" is none."""
    assert parse_proxy(value) == expected


@pytest.mark.parametrize(
    "value",
    ["https://proxy.corp:3128", "socks5://proxy:1080", "http://proxy:99999", "http://proxy/path", "http://"],
)
def test_parse_proxy_rejects(value: str) -> None:
    """Only plain http proxies with nothing after the port."""
    with pytest.raises(ValueError, match="proxy"):
        parse_proxy(value)


@pytest.mark.parametrize(
    ("entries", "host", "port", "expected"),
    [
        (("*",), "anything.example", 443, True),
        (("registry.corp",), "registry.corp", 443, True),
        (("registry.corp",), "cdn.registry.corp", 443, True),
        (("registry.corp",), "evilregistry.corp", 443, False),
        ((".corp",), "registry.corp", 443, True),
        ((".corp",), "corp", 443, True),
        ((".corp",), "registry.example", 443, False),
        (("REGISTRY.CORP",), "registry.corp", 443, False),  # entries are lowered by split_no_proxy
        (("10.1.2.3",), "10.1.2.3", 80, True),
        (("10.1.2.3",), "10.1.2.4", 80, False),
        (("10.0.0.0/8",), "10.200.0.1", 80, True),
        (("10.0.0.0/8",), "11.0.0.1", 80, False),
        (("10.0.0.0/8",), "ten.corp", 80, False),
        (("::1",), "::1", 80, True),
        (("fd00::/8",), "[fd00::5]", 80, True),
        (("registry.corp:5000",), "registry.corp", 5000, True),
        (("registry.corp:5000",), "registry.corp", 443, False),
        (("[::1]:5000",), "::1", 5000, True),
        (("10.0.0.0/99",), "10.0.0.1", 80, False),
        ((), "registry.corp", 443, False),
    ],
)
def test_bypasses(entries: tuple[str, ...], host: str, port: int, expected: bool) -> None:
    """NO_PROXY forms: *, host (and subdomains), .domain, IP, CIDR, each with an optional :port."""
    assert bypasses(entries, host, port) is expected


@pytest.mark.parametrize(
    ("rules", "url", "expected"),
    [
        (ProxyRules(PROXY, None), "http://registry.corp/v2/", PROXY),
        (ProxyRules(PROXY, None), "https://registry.corp/v2/", None),
        (ProxyRules(None, OTHER), "https://registry.corp/v2/", OTHER),
        (ProxyRules(PROXY, OTHER, (".corp",)), "https://registry.corp/v2/", None),
        (ProxyRules(PROXY, OTHER, (".corp",)), "https://production.cloudflare.docker.com/x", OTHER),
        (DIRECT, "https://registry-1.docker.io/v2/", None),
    ],
)
def test_proxy_for(rules: ProxyRules, url: str, expected: Proxy | None) -> None:
    """The proxy by the target's scheme, unless NO_PROXY matches the target's own host."""
    assert rules.proxy_for(URL(url)) == expected


def test_environment_lower_case_wins_and_upper_case_counts() -> None:
    """http_proxy beats HTTP_PROXY; HTTPS_PROXY and NO_PROXY are read when no lower-case one is set."""
    rules = from_environ(
        {
            "http_proxy": "http://proxy.corp:3128",
            "HTTP_PROXY": "http://other.corp:8080",
            "HTTPS_PROXY": "other.corp:8080",
            "NO_PROXY": "localhost, .corp 10.0.0.0/8",
        }
    )
    assert rules == ProxyRules(PROXY, OTHER, ("localhost", ".corp", "10.0.0.0/8"))


def test_empty_variables_mean_unset() -> None:
    """An empty proxy variable is no proxy."""
    assert from_environ({"http_proxy": "", "HTTPS_PROXY": " "}) == DIRECT


def test_bad_environment_proxy_names_the_variable_not_the_value() -> None:
    """A proxy variable that is no http URL is an error naming the variable, never echoing secrets."""
    with pytest.raises(ValueError, match=r"^https_proxy: ") as caught:
        from_environ({"https_proxy": "https://user:secret@proxy:3128"})
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, ProxyRules(PROXY, OTHER, ("x",))),
        ("", ProxyRules(None, None, ("x",))),
        ("other.corp:8080", ProxyRules(OTHER, OTHER, ("x",))),
    ],
)
def test_upstream_proxy_key_overrides_both_proxies_and_keeps_no_proxy(
    key: str | None, expected: ProxyRules
) -> None:
    """No key keeps the environment's; "" goes direct; a URL serves http and https targets."""
    assert ProxyRules(PROXY, OTHER, ("x",)).overridden(key) == expected


def test_credentials_never_shown() -> None:
    """str, repr and redacted() mask a proxy's password; the header carries it for the proxy only."""
    proxy = parse_proxy("http://egress:hunter2@proxy.corp:3128")
    assert proxy is not None
    shown = str(proxy) + repr(proxy) + str(ProxyRules(proxy, proxy).redacted())
    assert "hunter2" not in shown
    assert str(proxy) == "http://***@proxy.corp:3128"
    assert proxy.authorization == "Basic ZWdyZXNzOmh1bnRlcjI="
    assert str(proxy.url) == "http://proxy.corp:3128"
