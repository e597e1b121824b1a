"""Settings: frozen values read once from flags, environment, a TOML file and embedded defaults.

Precedence is flag > environment > file > default. An unknown file key or a bad value is a ConfigError
naming it; the CLI turns that into exit status 2. Secrets never appear in `repr` or `redacted()`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DOCKER_HUB = "https://registry-1.docker.io"
ENV_PREFIX = "MIRROR_"
SECRET_KEYS = frozenset({"upstream_password"})


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything the mirror needs to run; built only by `load`, never mutated."""

    listen: Listen = Listen("0.0.0.0", 5000)
    cache_dir: Path = Path("./cache")
    upstream: str = DOCKER_HUB
    upstream_username: str | None = None
    upstream_password: str | None = field(default=None, repr=False)
    cache_max_bytes: int = 50 * 1024**3
    tag_ttl: float = 300.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    auth_realms: tuple[str, ...] = ()
    log_format: str = "auto"
    log_level: str = "info"

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain values, secrets replaced, for `--print-config` and logs."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["listen"] = str(self.listen)
        values["cache_dir"] = str(self.cache_dir)
        values["auth_realms"] = list(self.auth_realms)
        if self.upstream_password is not None:
            values["upstream_password"] = "***"  # noqa: S105  # the redaction marker, not a password
        return values


def _listen(value: Any) -> Listen:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT with a port from 1 to 65535")
    return Listen(host.strip("[]") or "0.0.0.0", int(port))


def _url(value: Any) -> str:
    text = str(value).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("credentials, query and fragment are not allowed in the URL")
    return text


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _bytes(value: Any) -> int:
    """A size: an integer number of bytes, or a string like "500M", "50G", "2TiB" (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in _UNITS else ""
        number = text[: len(text) - len(unit)].strip()
        if not number.isdigit():
            raise ValueError("expected a size such as 10737418240, 500M or 50G")
        size = int(number) * _UNITS[unit]
    if size <= 0:
        raise ValueError("expected a size > 0")
    return size


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number of seconds, not a boolean")
    seconds = float(value)
    if not 0 <= seconds < 10**7:
        raise ValueError("expected a number of seconds >= 0")
    return seconds


def _positive_seconds(value: Any) -> float:
    seconds = _seconds(value)
    if seconds == 0:
        raise ValueError("expected a number of seconds > 0")
    return seconds


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _hosts(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of host names")
    return tuple(i.strip().lower() for i in items if i.strip())


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return str(value)

    return parse


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "listen": _listen,
    "cache_dir": lambda v: Path(_text(v)),
    "upstream": _url,
    "upstream_username": _text,
    "upstream_password": _text,
    "cache_max_bytes": _bytes,
    "tag_ttl": _seconds,
    "connect_timeout": _positive_seconds,
    "read_timeout": _positive_seconds,
    "auth_realms": _hosts,
    "log_format": _choice("auto", "json", "console"),
    "log_level": _choice("debug", "info", "warning", "error"),
}


def _parse(key: str, value: Any, source: str) -> Any:
    try:
        return _PARSERS[key](value)
    except (ValueError, TypeError) as exc:
        shown = "***" if key in SECRET_KEYS or (key == "upstream" and "@" in str(value)) else repr(value)
        raise ConfigError(f"{source}: bad value {shown} for {key}: {exc}") from None


def read_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file; unknown keys are errors."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    unknown = sorted(set(data) - set(_PARSERS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {', '.join(unknown)}")
    return {k: _parse(k, v, f"config file {path}") for k, v in data.items()}


def read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as MIRROR_* variables.

    Other MIRROR_* names are ignored, not errors: Kubernetes injects MIRROR_PORT, MIRROR_SERVICE_HOST, ...
    into every pod of a namespace with a Service called `mirror`.
    """
    found = {}
    for key in _PARSERS:
        name = ENV_PREFIX + key.upper()
        if name in environ:
            found[key] = _parse(key, environ[name], name)
    return found


def load(
    flags: Mapping[str, Any], environ: Mapping[str, str] = os.environ, config_file: Path | None = None
) -> Settings:
    """Settings from flags > environment > file > defaults. `flags` maps setting names to raw values."""
    path = config_file or (Path(environ["MIRROR_CONFIG"]) if environ.get("MIRROR_CONFIG") else None)
    merged: dict[str, Any] = read_file(path) if path else {}
    merged.update(read_environ(environ))
    merged.update({k: _parse(k, v, f"--{k.replace('_', '-')}") for k, v in flags.items() if v is not None})
    return Settings(**merged)
