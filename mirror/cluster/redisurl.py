"""Where the shared mode's Redis is: a `redis://`, `rediss://` or `redis+sentinel://` URL, parsed
into a value (pure). The password never appears in `str()` or `repr()`.

`redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]` names Sentinels and the master
they watch; the password is the master's and the Sentinels' (one secret, as most deployments run it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

SCHEMES = ("redis", "rediss", "redis+sentinel")
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A parsed Redis location: one server (`tls` for rediss://), or Sentinels and a master name."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    master: str | None = None  # Sentinel only

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def sentinel(self) -> bool:
        return self.master is not None

    def __str__(self) -> str:
        """The URL with the password shown as ***."""
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}{':***' if self.password else ''}@"
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        path = f"/{self.master}/{self.db}" if self.master else f"/{self.db}"
        return f"{self.scheme}://{auth}{hosts}{path}"


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad host:port {text!r}")
    return host, int(port)


def _db(text: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"database must be a number, not {text!r}")
    return int(text)


def parse(value: Any) -> RedisUrl:
    """A RedisUrl from its text; ValueError says what is wrong (without the password)."""
    text = str(value).strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError("expected a redis://, rediss:// or redis+sentinel:// URL")
    userinfo, at, location = rest.rpartition("@")
    if not at:
        userinfo, location = "", rest
    username, _, password = userinfo.partition(":")
    netloc, _, path = location.partition("/")
    path, _, query = path.partition("?")
    if query or "#" in path:
        raise ValueError("query and fragment are not allowed in the Redis URL")
    parts = [p for p in path.split("/") if p]
    common = {"username": unquote(username) or None, "password": unquote(password) or None}
    if scheme == "redis+sentinel":
        hosts = tuple(_host_port(h, DEFAULT_SENTINEL_PORT) for h in netloc.split(",") if h)
        if not hosts or not parts or len(parts) > 2:
            raise ValueError("expected redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]")
        db = _db(parts[1]) if len(parts) == 2 else 0
        return RedisUrl(scheme, hosts, db, master=parts[0], **common)
    split = urlsplit(f"//{netloc}")
    if not split.hostname or "," in netloc or len(parts) > 1:
        raise ValueError(f"expected {scheme}://[:PASSWORD@]HOST[:PORT][/DB]")
    return RedisUrl(scheme, (_host_port(netloc, DEFAULT_PORT),), _db(parts[0] if parts else ""), **common)
