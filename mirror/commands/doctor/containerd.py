"""containerd: config.toml's registry `config_path` (or the deprecated `mirrors`), then hosts.toml files."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirror.commands import hosts_toml
from mirror.commands.doctor.model import Paths, Route, RuntimeConfig
from mirror.commands.probes import CONTAINERD, Endpoint

# Where the CRI plugin keeps its registry settings, by config.toml `version`.
_REGISTRY_TABLES = {
    1: ("plugins", "cri", "registry"),
    2: ("plugins", "io.containerd.grpc.v1.cri", "registry"),
    3: ("plugins", "io.containerd.cri.v1.images", "registry"),
}
# containerd 2.x (config version 3) reads these when config_path is unset; 1.x reads no hosts.toml then.
_V3_DEFAULT_CONFIG_PATH = "/etc/containerd/certs.d:/etc/docker/certs.d"
SET_CONFIG_PATH = (
    'set config_path in {file}: [plugins."io.containerd.grpc.v1.cri".registry] config_path = '
    '"/etc/containerd/certs.d" (once; then restart containerd: every later hosts.toml change applies '
    "at the next pull)"
)


def _table(data: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    for key in keys:
        value = data.get(key)
        if not isinstance(value, dict):
            return {}
        data = value
    return data


def endpoint(host: hosts_toml.Host, paths: Paths, host_dir: Path) -> Endpoint:
    """The probe endpoint for a hosts.toml host. File paths are the node's (under `paths.root`); a relative
    one is relative to the host directory, as containerd reads it."""

    def file(path: str) -> str:
        return str(paths.on_node(path) if path.startswith("/") else host_dir / path)

    return Endpoint(
        url=host.full_url,
        ca=tuple(file(c) for c in host.ca),
        skip_verify=host.skip_verify,
        client=None if host.client is None else (file(host.client[0]), file(host.client[1])),
        headers=host.headers,
        override_path=host.override_path,
    )


def hosts_route(roots: Sequence[Path], registry: str, paths: Paths, fix_url: str) -> Route:
    """What the hosts.toml files under `roots` say about `registry` (shared with k3s's generated files)."""
    found = hosts_toml.find(roots, registry)
    node_config = f"mirror node-config {registry} --mirror {fix_url} --certs-dir {roots[0] if roots else '…'}"
    write_it = f"run `{node_config}` (with --default: every registry)"
    if found is None or not (found / "hosts.toml").is_file():
        where = str(found) if found else " or ".join(str(r / registry) for r in roots) or "config_path"
        return Route(
            registry,
            source=str(found) if found else None,
            problems=(f"no hosts.toml for {registry} ({where}): pulls go straight to {registry}",),
            fixes=(write_it,),
        )
    file = found / "hosts.toml"
    try:
        parsed = hosts_toml.parse(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return Route(
            registry, source=str(file), problems=(f"{file} cannot be read: {exc}",), fixes=(write_it,)
        )
    problems, fixes = [], []
    pulling = [h for h in parsed.hosts if h.pulls]
    if not pulling:
        problems.append(f"{file} has no [host] with the pull capability: pulls go to {registry}")
        fixes.append(write_it)
    elif not pulling[0].resolves:
        problems.append(
            f"{pulling[0].url} in {file} lacks the resolve capability: tags are resolved at the registry, "
            "so pulls by tag fail while it is down and count against its rate limit"
        )
        fixes.append(f'capabilities = ["pull", "resolve"] for {pulling[0].url} in {file}')
    return Route(
        registry,
        endpoints=tuple(endpoint(h, paths, found) for h in pulling),
        source=str(file),
        problems=tuple(problems),
        fixes=tuple(fixes),
    )


def _mirrors_route(mirrors: dict[str, Any], registry: str, file: Path) -> Route:
    entry = mirrors.get(registry) or mirrors.get("*") or {}
    urls = [str(u) for u in entry.get("endpoint", [])] if isinstance(entry, dict) else []
    return Route(
        registry,
        endpoints=tuple(Endpoint(url=u if "://" in u else f"https://{u}") for u in urls),
        source=str(file),
        problems=() if urls else (f"no mirror for {registry} in registry.mirrors of {file}",),
    )


def read(file: Path, registries: Sequence[str], paths: Paths, fix_url: str) -> RuntimeConfig:
    """Read containerd's config.toml and the hosts.toml files it points at."""
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return RuntimeConfig("containerd", CONTAINERD, (str(file),), problems=(f"{file}: {exc}",))
    version = data.get("version", 1)
    registry = _table(data, _REGISTRY_TABLES.get(version, _REGISTRY_TABLES[2]))
    notes = []
    disabled = {str(p) for p in data.get("disabled_plugins", [])}
    if disabled & {"cri", "io.containerd.grpc.v1.cri"}:
        notes.append(
            f"{file} disables the CRI plugin: kubelet does not use this containerd, and config_path is a CRI "
            "setting (ctr and nerdctl take --hosts-dir)"
        )
    if data.get("imports"):
        notes.append(f"{file} imports other files: `containerd config dump` shows the merged configuration")
    config_path = registry.get("config_path") or (_V3_DEFAULT_CONFIG_PATH if version == 3 else "")
    mirrors = registry.get("mirrors")
    if not config_path and isinstance(mirrors, dict) and mirrors:
        notes.append(
            "registry.mirrors is deprecated (and needs a containerd restart for every change): "
            + SET_CONFIG_PATH.format(file=file)
        )
        return RuntimeConfig(
            "containerd",
            CONTAINERD,
            (str(file),),
            tuple(_mirrors_route(mirrors, r, file) for r in registries),
            notes=tuple(notes),
        )
    if not config_path:
        return RuntimeConfig(
            "containerd",
            CONTAINERD,
            (str(file),),
            routes=tuple(
                Route(r, source=str(file), problems=(f"CRI ignores hosts.toml: pulls go straight to {r}",))
                for r in registries
            ),
            problems=(f"config_path is not set in {file}: kubelet's pulls never read hosts.toml files",),
            fixes=(SET_CONFIG_PATH.format(file=file),),
            notes=tuple(notes),
        )
    roots = [paths.on_node(p) for p in str(config_path).split(":") if p]
    notes.append(f"config_path = {config_path}")
    routes = tuple(hosts_route(roots, r, paths, fix_url) for r in registries)
    return RuntimeConfig("containerd", CONTAINERD, (str(file),), routes, notes=tuple(notes))
