"""podman, CRI-O, skopeo, buildah: registries.conf (v2) and its registries.conf.d drop-ins."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirror.commands.doctor.model import Route, RuntimeConfig
from mirror.commands.probes import PODMAN, Endpoint
from mirror.oci import DOCKER_IO

APPLY = "podman and skopeo read it at every run; restart CRI-O (or send it SIGHUP) to apply it"


def load(file: Path, drop_in_dir: Path) -> tuple[list[str], dict[str, dict[str, Any]], list[str]]:
    """(files read, [[registry]] tables by prefix, problems): drop-ins in name order replace earlier
    tables with the same prefix, as containers/image merges them."""
    files, tables, problems = [], {}, []
    drop_ins = sorted(drop_in_dir.glob("*.conf")) if drop_in_dir.is_dir() else []
    for path in [file, *drop_ins] if file.is_file() else drop_ins:
        files.append(str(path))
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        for table in data.get("registry", []):
            if isinstance(table, dict):
                prefix = str(table.get("prefix") or table.get("location") or "")
                tables[prefix] = {**table, "_file": str(path)}
    return files, tables, problems


def _matches(prefix: str, name: str) -> bool:
    if prefix.startswith("*."):
        host = name.split("/", 1)[0]
        return host.endswith(prefix[1:])
    return name == prefix or name.startswith(prefix + "/")


def match(tables: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The [[registry]] table for `name` (registry[/repository]): the longest matching prefix."""
    found = [p for p in tables if p and _matches(p, name)]
    return tables[max(found, key=len)] if found else None


def endpoint(location: str, insecure: bool) -> Endpoint:
    """A mirror `location` (host[:port][/path]): https first; with `insecure`, unverified, then plain http."""
    host, _, path = location.partition("/")
    return Endpoint(url=f"https://{host}", path_prefix=path, skip_verify=insecure, http_fallback=insecure)


def _route(tables: dict[str, dict[str, Any]], registry: str, name: str, fix_url: str) -> Route:
    table = match(tables, name)
    location = fix_url.split("://", 1)[-1]
    mirror_for = location if registry == DOCKER_IO else f"{location}/{registry}"
    add = (
        f'add [[registry]] prefix = "{registry}" with [[registry.mirror]] location = "{mirror_for}"'
        f"{', insecure = true' if fix_url.startswith('http://') else ''} (a drop-in in registries.conf.d "
        f"works); {APPLY}"
    )
    if table is None:
        return Route(
            registry, problems=(f"no [[registry]] for {registry}: pulls go straight to it",), fixes=(add,)
        )
    source = str(table["_file"])
    if table.get("blocked"):
        return Route(registry, source=source, problems=(f"{registry} is blocked in {source}",))
    digest_only = bool(table.get("mirror-by-digest-only"))
    mirrors = [m for m in table.get("mirror", []) if isinstance(m, dict) and m.get("location")]
    usable = [
        m for m in mirrors if not digest_only and m.get("pull-from-mirror", "all") in ("all", "tag-only")
    ]
    problems = []
    if not mirrors:
        problems.append(f"the [[registry]] for {registry} in {source} has no [[registry.mirror]]")
    elif not usable:
        problems.append(f"the mirrors for {registry} in {source} serve pulls by digest only, not by tag")
    return Route(
        registry,
        endpoints=tuple(endpoint(str(m["location"]), bool(m.get("insecure"))) for m in usable),
        source=source,
        problems=tuple(problems),
        fixes=(add,) if problems else (),
    )


def read(file: Path, drop_in_dir: Path, names: Sequence[tuple[str, str]], fix_url: str) -> RuntimeConfig:
    """Read registries.conf and drop-ins for each (registry, registry/repository of its probe image)."""
    files, tables, problems = load(file, drop_in_dir)
    routes = tuple(_route(tables, registry, name, fix_url) for registry, name in names)
    notes = ("docker.io credentials are not sent to a mirror: the mirror uses its own upstream credentials",)
    return RuntimeConfig("podman", PODMAN, tuple(files), routes, problems=tuple(problems), notes=notes)
