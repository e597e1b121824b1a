"""Parsers of configuration values: each takes what a TOML file, the environment or a flag gave and
returns the typed value, or raises ValueError/TypeError saying what was expected."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mirror.errors import RegistryError
from mirror.oci import COMPONENT, parse_image_ref
from mirror.upstream.egress import parse_proxy
from mirror.upstream.repository_lists import check_pattern

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def listen_address(value: Any) -> Listen:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT with a port from 1 to 65535")
    return Listen(host.strip("[]") or "0.0.0.0", int(port))


def http_url(value: Any) -> str:
    text = str(value).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("credentials, query and fragment are not allowed in the URL")
    return text


#: Shortest peer secret accepted: an HMAC key must not be guessable.
MIN_SECRET = 16


def secret(value: Any) -> str:
    """A shared secret of at least MIN_SECRET characters."""
    text = str(value).strip()
    if len(text) < MIN_SECRET:
        raise ValueError(f"expected a secret of at least {MIN_SECRET} characters")
    return text


def size(value: Any) -> int:
    """An integer number of bytes, or a string like "500M", "50G", "2TiB" (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        found = value
    else:
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in _UNITS else ""
        number = text[: len(text) - len(unit)].strip()
        if not number.isdigit():
            raise ValueError("expected a size such as 10737418240, 500M or 50G")
        found = int(number) * _UNITS[unit]
    if found <= 0:
        raise ValueError("expected a size > 0")
    return found


def size_or_zero(value: Any) -> int:
    """A size (as `size` reads it), or 0 (off)."""
    if not isinstance(value, bool) and str(value).strip() == "0":
        return 0
    return size(value)


def count(value: Any) -> int:
    """A whole number >= 0 (an int, or its decimal text)."""
    if isinstance(value, bool):
        raise TypeError("expected a whole number, not a boolean")
    text = str(value).strip()
    if not isinstance(value, int) and not (text.isascii() and text.isdigit() and len(text) < 10):
        raise ValueError("expected a whole number >= 0")
    found = int(text)
    if found < 0:
        raise ValueError("expected a whole number >= 0")
    return found


def positive_count(value: Any) -> int:
    found = count(value)
    if found == 0:
        raise ValueError("expected a whole number > 0")
    return found


def seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number of seconds, not a boolean")
    found = float(value)
    if not 0 <= found < 10**7:
        raise ValueError("expected a number of seconds >= 0")
    return found


def positive_seconds(value: Any) -> float:
    found = seconds(value)
    if found == 0:
        raise ValueError("expected a number of seconds > 0")
    return found


def nonempty(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def host_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of host names")
    return tuple(i.strip().lower() for i in items if i.strip())


def alias_list(value: Any) -> tuple[str, ...]:
    """Path prefixes naming an upstream: each must be a valid repository path component."""
    found = host_list(value)
    for alias in found:
        if not COMPONENT.fullmatch(alias):
            raise ValueError(f"{alias!r} is not a valid path component (lowercase letters, digits, . _ -)")
    return found


def registry_host(value: Any) -> str:
    """A registry host name as clients name it (`ghcr.io`, `registry.k8s.io`, `host:5000`), lowercased."""
    text = nonempty(value).lower()
    if not _HOST.fullmatch(text):
        raise ValueError("expected a registry host name such as ghcr.io or registry.example.com:5000")
    return text


def flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return str(value)

    return parse


def fraction(value: Any) -> float:
    """A number between 0 and 1 (exclusive of 0)."""
    if isinstance(value, bool):
        raise TypeError("expected a fraction such as 0.9, not a boolean")
    found = float(value)
    if not 0 < found <= 1:
        raise ValueError("expected a fraction > 0 and <= 1, such as 0.9")
    return found


def image_list(value: Any) -> tuple[str, ...]:
    """Image references (`[registry/]name[:tag|@digest]`), each checked and written in full."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of image references")
    try:
        return tuple(str(parse_image_ref(i)) for i in items if i.strip())
    except RegistryError as exc:
        raise ValueError(f"invalid image reference: {exc}") from None


def platform_list(value: Any) -> tuple[str, ...]:
    """Platforms as os/arch or os/arch/variant (e.g. linux/amd64, linux/arm/v7), or ["all"]."""
    found = host_list(value)
    for item in found:
        if item != "all" and not re.fullmatch(r"[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?", item):
            raise ValueError(f"{item!r} is not os/arch[/variant] (such as linux/amd64) or all")
    if not found:
        raise ValueError("expected at least one platform")
    return found


def pattern_list(value: Any) -> tuple[str, ...]:
    """Repository glob patterns (allow and deny lists), e.g. `library/*`, `team-a/**`."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of repository patterns")
    return tuple(check_pattern(i.strip()) for i in items if i.strip())


def proxy_url(value: Any) -> str:
    """A forward proxy, `http://[user:password@]host[:port]`, or `""` for a direct connection."""
    if not isinstance(value, str):
        raise TypeError('expected an http:// proxy URL, or "" to connect direct')
    parse_proxy(value)
    return value.strip()
