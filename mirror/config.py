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
from mirror.cluster import redisurl
from mirror.cluster.redisurl import RedisUrl
from mirror.oci import DOCKER_HUB, DOCKER_IO, DOCKER_IO_NAMES
from mirror.upstream import egress
from mirror.upstream.egress import DIRECT, ProxyRules
from mirror.values import Listen

ENV_PREFIX = "MIRROR_"
SECRET_KEYS = frozenset({"upstream_password", "password", "peer_secret"})
REDACTED = "***"
#: Keys whose values may carry credentials in the URL (user:password@).
URL_KEYS = frozenset({"upstream", "url", "proxy", "redis_url"})

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
    referrers_ttl: float | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    auth_realms: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    upstream_auth: str = "mirror"
    proxy: str | None = field(default=None, repr=False)  # None: the environment's; "": direct
    egress: ProxyRules = DIRECT  # the effective proxy rules, filled in by Settings.registries()
    headers_timeout: float | None = None  # top-level only, filled in by `registries()`
    max_transfers: int = 64  # top-level only, filled in by `registries()`
    fill_memory_bytes: int = 64 * 1024  # top-level only, filled in by `registries()`

    def redacted(self) -> dict[str, Any]:
        found = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "egress"}
        found.update(
            auth_realms=list(self.auth_realms),
            aliases=list(self.aliases),
            allow=list(self.allow),
            deny=list(self.deny),
            proxy=_redacted_proxy(self.proxy),
        )
        if self.password is not None:
            found["password"] = REDACTED
        return found


def _redacted_proxy(proxy: str | None) -> str | None:
    """A proxy setting as shown: its credentials masked."""
    if not proxy:
        return proxy
    return str(egress.parse_proxy(proxy))


@dataclass(frozen=True)
class Settings:
    """Everything the mirror needs to run; built only by `load`, never mutated."""

    listen: Listen = Listen("0.0.0.0", 5000)
    cache_dir: Path = Path("./cache")
    upstream: str = DOCKER_HUB
    upstream_username: str | None = None
    upstream_password: str | None = field(default=None, repr=False)
    upstream_aliases: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    upstream_auth: str = "mirror"
    upstream_auth_ttl: float = 60.0
    upstream_auth_denied_ttl: float = 10.0
    proxy: str | None = field(default=None, repr=False)
    cache_max_bytes: int = 50 * 1024**3
    cache_high_watermark: float = 0.95
    cache_low_watermark: float = 0.90
    pins: tuple[str, ...] = ()
    platforms: tuple[str, ...] = field(default_factory=lambda: (host_platform(),))
    tag_ttl: float = 300.0
    referrers_ttl: float | None = None  # None: each upstream's tag TTL
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
    fill_memory_bytes: int = 64 * 1024
    fill_min_bytes: int = 64 * 1024
    fill_min_window: float = 30.0
    fill_max_seconds: float = 6 * 3600.0
    abandoned_fills: int = 8
    abandoned_fill_bytes: int = 2 * 1024**3
    scrub_rate: int = 8 * 1024**2  # bytes per second the background scrubber re-hashes; 0: off
    fill_range_streams: int = 2
    fill_range_streams_total: int = 16
    fill_range_gap: int = 16 * 1024**2
    idle_timeout: float = 30.0
    header_timeout: float = 10.0
    log_format: str = "auto"
    log_level: str = "info"
    log_probes: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_htpasswd: Path | None = None
    auth_tokens: Path | None = None
    metrics_auth: bool = False
    auth_cache_ttl: float = 60.0
    reload_interval: float = 2.0
    upstreams: tuple[UpstreamSettings, ...] = ()
    egress: ProxyRules = DIRECT  # from http_proxy, https_proxy, no_proxy: read by load()
    # Shared mode (several replicas on one Redis): on when redis_url is set.
    redis_url: RedisUrl | None = None
    advertise_url: str | None = None
    peer_secret: str | None = field(default=None, repr=False)
    redis_timeout: float = 0.25
    redis_cooldown: float = 5.0
    lease_ttl: float = 5.0
    peer_hint_ttl: float = 3600.0

    @property
    def shared(self) -> bool:
        """Whether replicas coordinate through Redis."""
        return self.redis_url is not None

    def registries(self) -> tuple[UpstreamSettings, ...]:
        """Every upstream, Docker Hub first, with inherited values filled in."""
        docker = UpstreamSettings(
            DOCKER_IO,
            self.upstream,
            self.upstream_username,
            self.upstream_password,
            auth_realms=self.auth_realms,
            aliases=self.upstream_aliases,
            allow=self.allow,
            deny=self.deny,
            upstream_auth=self.upstream_auth,
            proxy=self.proxy,
        )
        return tuple(
            dataclasses.replace(
                u,
                tag_ttl=self.tag_ttl if u.tag_ttl is None else u.tag_ttl,
                referrers_ttl=_first(u.referrers_ttl, self.referrers_ttl, u.tag_ttl, self.tag_ttl),
                connect_timeout=self.connect_timeout if u.connect_timeout is None else u.connect_timeout,
                read_timeout=self.read_timeout if u.read_timeout is None else u.read_timeout,
                egress=self.egress.overridden(u.proxy),
                headers_timeout=self.headers_timeout,
                max_transfers=self.max_transfers,
                fill_memory_bytes=self.fill_memory_bytes,
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
            allow=list(self.allow),
            deny=list(self.deny),
            upstreams=[u.redacted() for u in self.upstreams],
            pins=list(self.pins),
            platforms=list(self.platforms),
            proxy=_redacted_proxy(self.proxy),
            egress=self.egress.redacted(),
        )
        for key in _PATH_KEYS:
            if found[key] is not None:
                found[key] = str(found[key])
        if self.upstream_password is not None:
            found["upstream_password"] = REDACTED
        if self.redis_url is not None:
            found["redis_url"] = str(self.redis_url)  # password as ***
        if self.peer_secret is not None:
            found["peer_secret"] = REDACTED
        return found


def _first(*found: float | None) -> float | None:
    """The first value that is set."""
    return next((f for f in found if f is not None), None)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "listen": values.listen_address,
    "cache_dir": lambda v: Path(values.nonempty(v)),
    "upstream": values.http_url,
    "upstream_username": values.nonempty,
    "upstream_password": values.nonempty,
    "upstream_password_file": lambda v: Path(values.nonempty(v)),
    "upstream_aliases": values.alias_list,
    "allow": values.pattern_list,
    "deny": values.pattern_list,
    "upstream_auth": values.choice("mirror", "client"),
    "upstream_auth_ttl": values.seconds,
    "upstream_auth_denied_ttl": values.seconds,
    "proxy": values.proxy_url,
    "cache_max_bytes": values.size,
    "cache_high_watermark": values.fraction,
    "cache_low_watermark": values.fraction,
    "pins": values.image_list,
    "platforms": values.platform_list,
    "tag_ttl": values.seconds,
    "referrers_ttl": values.seconds,
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
    "fill_memory_bytes": values.size_or_zero,
    "fill_min_bytes": values.size,
    "fill_min_window": values.positive_seconds,
    "fill_max_seconds": values.positive_seconds,
    "abandoned_fills": values.count,
    "abandoned_fill_bytes": values.size,
    "scrub_rate": values.size_or_zero,
    "fill_range_streams": values.count,
    "fill_range_streams_total": values.count,
    "fill_range_gap": values.size,
    "idle_timeout": values.positive_seconds,
    "header_timeout": values.positive_seconds,
    "log_format": values.choice("auto", "json", "console"),
    "log_level": values.choice("debug", "info", "warning", "error"),
    "log_probes": values.flag,
    "redis_url": redisurl.parse,
    "advertise_url": values.http_url,
    "peer_secret": values.secret,
    "peer_secret_file": lambda v: Path(values.nonempty(v)),
    "redis_timeout": values.positive_seconds,
    "redis_cooldown": values.positive_seconds,
    "lease_ttl": values.positive_seconds,
    "peer_hint_ttl": values.positive_seconds,
    "tls_cert": lambda v: Path(values.nonempty(v)),
    "tls_key": lambda v: Path(values.nonempty(v)),
    "tls_client_ca": lambda v: Path(values.nonempty(v)),
    "auth_htpasswd": lambda v: Path(values.nonempty(v)),
    "auth_tokens": lambda v: Path(values.nonempty(v)),
    "metrics_auth": values.flag,
    "auth_cache_ttl": values.seconds,
    "reload_interval": values.positive_seconds,
}
_PATH_KEYS = ("tls_cert", "tls_key", "tls_client_ca", "auth_htpasswd", "auth_tokens")

_UPSTREAM_PARSERS: dict[str, Callable[[Any], Any]] = {
    "registry": values.registry_host,
    "url": values.http_url,
    "username": values.nonempty,
    "password": values.nonempty,
    "password_env": values.nonempty,
    "password_file": lambda v: Path(values.nonempty(v)),
    "tag_ttl": values.seconds,
    "referrers_ttl": values.seconds,
    "connect_timeout": values.positive_seconds,
    "read_timeout": values.positive_seconds,
    "auth_realms": values.host_list,
    "aliases": values.alias_list,
    "allow": values.pattern_list,
    "deny": values.pattern_list,
    "upstream_auth": values.choice("mirror", "client"),
    "proxy": values.proxy_url,
}


def _parse(parsers: Mapping[str, Callable[[Any], Any]], key: str, value: Any, source: str) -> Any:
    try:
        return parsers[key](value)
    except (ValueError, TypeError) as exc:
        secret = key in SECRET_KEYS or (
            key in ("upstream", "url", "proxy", "redis_url") and "@" in str(value)
        )
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


def _peer_secret(merged: dict[str, Any]) -> None:
    """Replace `peer_secret_file` by the secret it holds."""
    path = merged.pop("peer_secret_file", None)
    if path is None:
        return
    if "peer_secret" in merged:
        raise ConfigError("give only one of peer_secret and peer_secret_file")
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read peer_secret_file {path}: {exc.strerror}") from None
    merged["peer_secret"] = _parse(_PARSERS, "peer_secret", text, f"peer_secret_file {path}")


def _check_shared(settings: Settings) -> None:
    if settings.redis_url is None:
        return
    if settings.advertise_url is None or settings.peer_secret is None:
        raise ConfigError(
            "redis_url needs advertise_url (how peers reach this replica)"
            " and peer_secret (or peer_secret_file)"
        )
    if settings.tls_client_ca is not None:
        raise ConfigError(
            "redis_url cannot be combined with tls_client_ca: peers present no client certificate"
        )
    if settings.tls_cert is not None and not settings.advertise_url.startswith("https://"):
        raise ConfigError("advertise_url must be an https:// URL when the mirror serves HTTPS (tls_cert)")


def _check_serving(settings: Settings) -> None:
    """TLS needs both halves of the pair; client certificates and metrics auth need what they build on."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("tls_cert and tls_key go together: give both or neither")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise ConfigError("tls_client_ca needs tls_cert and tls_key (client certificates are a TLS feature)")
    if settings.metrics_auth and settings.auth_htpasswd is None and settings.auth_tokens is None:
        raise ConfigError("metrics_auth needs auth_htpasswd or auth_tokens")


def _check_names(settings: Settings) -> None:
    """Every registry name and alias routes to exactly one upstream."""
    seen: dict[str, str] = {name: DOCKER_IO for name in DOCKER_IO_NAMES}
    for upstream in settings.registries():
        names = upstream.aliases if upstream.registry == DOCKER_IO else (upstream.registry, *upstream.aliases)
        for name in names:
            if seen.setdefault(name, upstream.registry) != upstream.registry:
                raise ConfigError(f"{name} names both {seen[name]} and {upstream.registry}")


def _read_password_file(merged: dict[str, Any]) -> None:
    """Replace `upstream_password_file` (a mounted Secret, say) by the password it holds."""
    secret_path = merged.pop("upstream_password_file", None)
    if secret_path is None:
        return
    if "upstream_password" in merged:
        raise ConfigError("give only one of upstream_password, upstream_password_file")
    try:
        merged["upstream_password"] = values.nonempty(secret_path.read_text().strip())
    except OSError as exc:
        raise ConfigError(f"cannot read upstream_password_file {secret_path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"upstream_password_file {secret_path} is empty") from None


def _check_access(settings: Settings) -> None:
    """Docker Hub names always have a namespace: a pattern without one could never match."""
    for pattern in (*settings.allow, *settings.deny):
        if "/" not in pattern and "**" not in pattern:
            raise ConfigError(
                f"allow/deny pattern {pattern!r} never matches a Docker Hub repository: "
                f"official images are library/<name> (library/{pattern})"
            )


def _check_client_mode(settings: Settings) -> None:
    """A client's Authorization carries one set of credentials: the mirror's own, or the upstream's."""
    client_mode = [u.registry for u in settings.registries() if u.upstream_auth == "client"]
    if client_mode and (settings.auth_htpasswd is not None or settings.auth_tokens is not None):
        raise ConfigError(
            f'upstream_auth = "client" ({", ".join(client_mode)}) takes the client\'s Authorization as its '
            "upstream credentials, so it cannot be combined with auth_htpasswd or auth_tokens; "
            "authenticate clients to the mirror with certificates (tls_client_ca) instead"
        )


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
    _peer_secret(merged)
    try:
        merged["egress"] = egress.from_environ(environ)
    except ValueError as exc:
        raise ConfigError(f"environment: {exc}") from None
    _read_password_file(merged)
    settings = Settings(**merged)
    _check_shared(settings)
    _check_names(settings)
    _check_access(settings)
    _check_client_mode(settings)
    _check_cache(settings)
    _check_serving(settings)
    return settings
