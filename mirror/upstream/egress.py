"""Egress through a forward proxy: which proxy, if any, a request to a URL goes through. Pure: no I/O.

The rules come from the standard environment (`http_proxy`, `https_proxy`, `no_proxy`, lower case
winning over upper case), or from an upstream's `proxy` key, which replaces both proxies for every
request made for that upstream (`""`: direct). `no_proxy` applies either way, to each request's own
host: the registry, its token realm and the hosts it redirects to (a CDN) are each decided alone.
`no_proxy` entries: `*` (everything), a host (and its subdomains), `.domain`, an IP address, a CIDR
block, each optionally with `:port`. Only http:// proxies are supported; https targets are reached
through them with `CONNECT`. Proxy credentials (`http://user:password@proxy:3128`) travel only as a
`Proxy-Authorization` header and are never shown: `str()` and `redacted()` mask them.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from yarl import URL

REDACTED = "***"
#: The port of a proxy URL that names none (curl's default).
DEFAULT_PROXY_PORT = 1080


@dataclass(frozen=True, slots=True)
class Proxy:
    """An http forward proxy: where to connect, and the `Proxy-Authorization` to send, if any."""

    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def authorization(self) -> str | None:
        """The `Proxy-Authorization` value for the proxy's credentials."""
        if not self.username:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    @property
    def url(self) -> URL:
        """The proxy's URL without credentials."""
        return URL.build(scheme="http", host=self.host, port=self.port)

    def __str__(self) -> str:
        userinfo = f"{REDACTED}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{userinfo}{host}:{self.port}"


def parse_proxy(value: str) -> Proxy | None:
    """A proxy URL (`http://[user:password@]host[:port]`, scheme optional); `""` means none."""
    text = value.strip()
    if not text:
        return None
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http":
        raise ValueError("expected an http:// proxy URL (https targets go through it with CONNECT)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the proxy port is not a number from 1 to 65535") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("expected a proxy URL http://[user:password@]host[:port] with nothing after it")
    return Proxy(
        parts.hostname,
        port or DEFAULT_PROXY_PORT,
        unquote(parts.username or ""),
        unquote(parts.password or ""),
    )


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, a bare IPv6 address or a host, as (host, port or None)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return entry, None


def bypasses(no_proxy: tuple[str, ...], host: str, port: int) -> bool:
    """Whether `no_proxy` sends a request to `host:port` direct."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy:
        if raw == "*":
            return True
        entry, entry_port = _split_port(raw)
        if entry_port is not None and entry_port != port:
            continue
        if "/" in entry:
            try:
                if address is not None and address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass  # not a CIDR block: never matches
            continue
        if _is_address(entry):
            if address is not None and address == ipaddress.ip_address(entry):
                return True
            continue
        domain = entry.lstrip(".").rstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def split_no_proxy(value: str) -> tuple[str, ...]:
    """The entries of a `no_proxy` value (comma- or space-separated), lower case."""
    return tuple(e.strip().lower() for e in value.replace(" ", ",").split(",") if e.strip())


@dataclass(frozen=True, slots=True)
class ProxyRules:
    """The proxy for http and for https targets (None: direct) and the hosts that bypass them."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: tuple[str, ...] = ()

    def proxy_for(self, url: URL) -> Proxy | None:
        """The proxy a request to `url` goes through, or None to connect direct."""
        proxy = self.https if url.scheme == "https" else self.http
        if proxy is None or bypasses(self.no_proxy, url.host or "", url.port or 0):
            return None
        return proxy

    def overridden(self, proxy: str | None) -> ProxyRules:
        """These rules with an upstream's `proxy` key applied: None keeps them, `""` goes direct."""
        if proxy is None:
            return self
        chosen = parse_proxy(proxy)
        return ProxyRules(chosen, chosen, self.no_proxy)

    def redacted(self) -> dict[str, object]:
        """The rules as plain values with credentials masked, for `--print-config`."""
        return {
            "http": str(self.http) if self.http else None,
            "https": str(self.https) if self.https else None,
            "no_proxy": list(self.no_proxy),
        }


#: No proxy at all: every request direct.
DIRECT = ProxyRules()


def _variable(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    for key in (name.lower(), name.upper()):
        if environ.get(key, "").strip():
            return key, environ[key]
    return None


def from_environ(environ: Mapping[str, str]) -> ProxyRules:
    """The rules of `http_proxy`, `https_proxy` and `no_proxy` (lower case first, then upper case).
    A proxy variable that is no proxy URL raises ValueError naming the variable, never its value."""
    found: dict[str, Proxy | None] = {}
    for name in ("http_proxy", "https_proxy"):
        variable = _variable(environ, name)
        try:
            found[name] = parse_proxy(variable[1]) if variable else None
        except ValueError as exc:
            assert variable is not None
            raise ValueError(f"{variable[0]}: {exc}") from None
    no_proxy = _variable(environ, "no_proxy")
    bypass = split_no_proxy(no_proxy[1]) if no_proxy else ()
    return ProxyRules(found["http_proxy"], found["https_proxy"], bypass)
