"""Settings: frozen values read once from flags, environment, a TOML file and embedded defaults.

Precedence is flag > environment > file > default. An unknown file key or a bad value is a ConfigError
naming it; the CLI turns that into exit status 2. Secrets never appear in `repr` or `redacted()`.

The top-level `upstream*` keys configure Docker Hub (`docker.io`), which is always served; each
`[[upstreams]]` table of the file adds another registry (ghcr.io, quay.io, a private one, ...).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirror import values
from mirror.oci import DOCKER_HUB, DOCKER_IO, DOCKER_IO_NAMES
from mirror.values import Listen

ENV_PREFIX = "MIRROR_"
SECRET_KEYS = frozenset({"upstream_password", "password"})
REDACTED = "***"

__all__ = ["DOCKER_HUB", "ConfigError", "Listen", "Settings", "UpstreamSettings", "load"]


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message names it."""


@dataclass(frozen=True)
class UpstreamSettings:
    """One registry the mirror serves. Unset timeouts and TTL inherit the top-level values."""

    registry: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tag_ttl: float | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    auth_realms: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    headers_timeout: float | None = None  # top-level only, filled in by `registries()`
    max_transfers: int = 64  # top-level only, filled in by `registries()`

    def redacted(self) -> dict[str, Any]:
        found = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        found.update(auth_realms=list(self.auth_realms), aliases=list(self.aliases))
        if self.password is not None:
            found["password"] = REDACTED
        return found


@dataclass(frozen=True)
class Settings:
    """Everything the mirror needs to run; built only by `load`, never mutated."""

    listen: Listen = Listen("0.0.0.0", 5000)
    cache_dir: Path = Path("./cache")
    upstream: str = DOCKER_HUB
    upstream_username: str | None = None
    upstream_password: str | None = field(default=None, repr=False)
    upstream_aliases: tuple[str, ...] = ()
    cache_max_bytes: int = 50 * 1024**3
    cache_high_watermark: float = 0.95
    cache_low_watermark: float = 0.90
    pins: tuple[str, ...] = ()
    platforms: tuple[str, ...] = field(default_factory=lambda: (host_platform(),))
    tag_ttl: float = 300.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    auth_realms: tuple[str, ...] = ()
    negative_ttl: float = 30.0
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0
    ratelimit_reserve: int = 10
    offline: bool = False
    prefetch: bool = False
    shutdown_grace: float = 10.0
    max_connections: int = 10000
    disk_reserve_bytes: int = 1024**3
    headers_timeout: float = 20.0
    max_transfers: int = 64
    fill_min_bytes: int = 64 * 1024
    fill_min_window: float = 30.0
    fill_max_seconds: float = 6 * 3600.0
    abandoned_fills: int = 8
    abandoned_fill_bytes: int = 2 * 1024**3
    idle_timeout: float = 30.0
    header_timeout: float = 10.0
    log_format: str = "auto"
    log_level: str = "info"
    upstreams: tuple[UpstreamSettings, ...] = ()

    def registries(self) -> tuple[UpstreamSettings, ...]:
        """Every upstream, Docker Hub first, with inherited values filled in."""
        docker = UpstreamSettings(
            DOCKER_IO,
            self.upstream,
            self.upstream_username,
            self.upstream_password,
            auth_realms=self.auth_realms,
            aliases=self.upstream_aliases,
        )
        return tuple(
            dataclasses.replace(
                u,
                tag_ttl=self.tag_ttl if u.tag_ttl is None else u.tag_ttl,
                connect_timeout=self.connect_timeout if u.connect_timeout is None else u.connect_timeout,
                read_timeout=self.read_timeout if u.read_timeout is None else u.read_timeout,
                headers_timeout=self.headers_timeout,
                max_transfers=self.max_transfers,
            )
            for u in (docker, *self.upstreams)
        )

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain values, secrets replaced, for `--print-config` and logs."""
        found = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        found.update(
            listen=str(self.listen),
            cache_dir=str(self.cache_dir),
            auth_realms=list(self.auth_realms),
            upstream_aliases=list(self.upstream_aliases),
            upstreams=[u.redacted() for u in self.upstreams],
            pins=list(self.pins),
            platforms=list(self.platforms),
        )
        if self.upstream_password is not None:
            found["upstream_password"] = REDACTED
        return found


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "listen": values.listen_address,
    "cache_dir": lambda v: Path(values.nonempty(v)),
    "upstream": values.http_url,
    "upstream_username": values.nonempty,
    "upstream_password": values.nonempty,
    "upstream_aliases": values.alias_list,
    "cache_max_bytes": values.size,
    "cache_high_watermark": values.fraction,
    "cache_low_watermark": values.fraction,
    "pins": values.image_list,
    "platforms": values.platform_list,
    "tag_ttl": values.seconds,
    "connect_timeout": values.positive_seconds,
    "read_timeout": values.positive_seconds,
    "auth_realms": values.host_list,
    "negative_ttl": values.seconds,
    "breaker_failures": values.positive_count,
    "breaker_cooldown": values.positive_seconds,
    "ratelimit_reserve": values.count,
    "offline": values.flag,
    "prefetch": values.flag,
    "shutdown_grace": values.seconds,
    "max_connections": values.positive_count,
    "disk_reserve_bytes": values.size,
    "headers_timeout": values.positive_seconds,
    "max_transfers": values.positive_count,
    "fill_min_bytes": values.size,
    "fill_min_window": values.positive_seconds,
    "fill_max_seconds": values.positive_seconds,
    "abandoned_fills": values.count,
    "abandoned_fill_bytes": values.size,
    "idle_timeout": values.positive_seconds,
    "header_timeout": values.positive_seconds,
    "log_format": values.choice("auto", "json", "console"),
    "log_level": values.choice("debug", "info", "warning", "error"),
}

_UPSTREAM_PARSERS: dict[str, Callable[[Any], Any]] = {
    "registry": values.registry_host,
    "url": values.http_url,
    "username": values.nonempty,
    "password": values.nonempty,
    "password_env": values.nonempty,
    "password_file": lambda v: Path(values.nonempty(v)),
    "tag_ttl": values.seconds,
    "connect_timeout": values.positive_seconds,
    "read_timeout": values.positive_seconds,
    "auth_realms": values.host_list,
    "aliases": values.alias_list,
}


def _parse(parsers: Mapping[str, Callable[[Any], Any]], key: str, value: Any, source: str) -> Any:
    try:
        return parsers[key](value)
    except (ValueError, TypeError) as exc:
        secret = key in SECRET_KEYS or (key in ("upstream", "url") and "@" in str(value))
        shown = REDACTED if secret else repr(value)
        raise ConfigError(f"{source}: bad value {shown} for {key}: {exc}") from None


def read_file(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings in a TOML file; unknown keys are errors."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    tables = data.pop("upstreams", [])
    unknown = sorted(set(data) - set(_PARSERS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {', '.join(unknown)}")
    found = {k: _parse(_PARSERS, k, v, f"config file {path}") for k, v in data.items()}
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"config file {path}: upstreams must be an array of tables ([[upstreams]])")
    found["upstreams"] = tuple(
        _upstream(t, f"config file {path}: upstreams[{i}]", environ) for i, t in enumerate(tables)
    )
    return found


def _upstream(table: dict[str, Any], source: str, environ: Mapping[str, str]) -> UpstreamSettings:
    unknown = sorted(set(table) - set(_UPSTREAM_PARSERS))
    if unknown:
        raise ConfigError(f"{source}: unknown key {', '.join(unknown)}")
    if "registry" not in table:
        raise ConfigError(f"{source}: registry is required (the host it stands for, e.g. ghcr.io)")
    found = {k: _parse(_UPSTREAM_PARSERS, k, v, source) for k, v in table.items()}
    if found["registry"] in DOCKER_IO_NAMES:
        raise ConfigError(f"{source}: docker.io is configured with the top-level upstream keys")
    sources = [k for k in ("password", "password_env", "password_file") if k in found]
    if len(sources) > 1:
        raise ConfigError(f"{source}: give only one of {', '.join(sources)}")
    if "password_env" in found:
        name = found.pop("password_env")
        if not environ.get(name):
            raise ConfigError(f"{source}: password_env names {name}, which is not set")
        found["password"] = environ[name]
    if "password_file" in found:
        secret_path = found.pop("password_file")
        try:
            found["password"] = secret_path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read password_file {secret_path}: {exc.strerror}") from None
    found.setdefault("url", f"https://{found['registry']}")
    return UpstreamSettings(**found)


def read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as MIRROR_* variables.

    Other MIRROR_* names are ignored, not errors: Kubernetes injects MIRROR_PORT, MIRROR_SERVICE_HOST, ...
    into every pod of a namespace with a Service called `mirror`.
    """
    found = {}
    for key in _PARSERS:
        name = ENV_PREFIX + key.upper()
        if name in environ:
            found[key] = _parse(_PARSERS, key, environ[name], name)
    return found


def host_platform() -> str:
    """This machine's platform as os/arch, the default of what pins warm."""
    machine = platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def _check_cache(settings: Settings) -> None:
    if settings.cache_low_watermark >= settings.cache_high_watermark:
        raise ConfigError("cache_low_watermark must be below cache_high_watermark")
    registries = {u.registry for u in settings.registries()}
    for pin in settings.pins:
        if pin.split("/", 1)[0] not in registries:
            raise ConfigError(f"pin {pin}: its registry has no [[upstreams]] table")


def _check_names(settings: Settings) -> None:
    """Every registry name and alias routes to exactly one upstream."""
    seen: dict[str, str] = {name: DOCKER_IO for name in DOCKER_IO_NAMES}
    for upstream in settings.registries():
        names = upstream.aliases if upstream.registry == DOCKER_IO else (upstream.registry, *upstream.aliases)
        for name in names:
            if seen.setdefault(name, upstream.registry) != upstream.registry:
                raise ConfigError(f"{name} names both {seen[name]} and {upstream.registry}")


def load(
    flags: Mapping[str, Any], environ: Mapping[str, str] = os.environ, config_file: Path | None = None
) -> Settings:
    """Settings from flags > environment > file > defaults. `flags` maps setting names to raw values."""
    path = config_file or (Path(environ["MIRROR_CONFIG"]) if environ.get("MIRROR_CONFIG") else None)
    merged: dict[str, Any] = read_file(path, environ) if path else {}
    merged.update(read_environ(environ))
    merged.update(
        {k: _parse(_PARSERS, k, v, f"--{k.replace('_', '-')}") for k, v in flags.items() if v is not None}
    )
    settings = Settings(**merged)
    _check_names(settings)
    _check_cache(settings)
    return settings
