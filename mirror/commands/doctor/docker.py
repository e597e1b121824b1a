"""Docker Engine: daemon.json `registry-mirrors` (Docker Hub only) and certs.d for an https mirror."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from mirror.commands.doctor.model import Route, RuntimeConfig
from mirror.commands.probes import DOCKER, Endpoint
from mirror.oci import DOCKER_IO

RELOAD = "then reload dockerd (`kill -HUP $(pidof dockerd)` or `systemctl reload docker`): no restart needed"


def _endpoint(url: str, certs_dir: Path) -> Endpoint:
    """A mirror URL with the CA Docker trusts for it (`certs.d/<host:port>/ca.crt`), if any."""
    host = urllib.parse.urlsplit(url).netloc
    ca = certs_dir / host / "ca.crt"
    return Endpoint(url=url.rstrip("/"), ca=(str(ca),) if ca.is_file() else ())


def _docker_hub(mirrors: list[str], file: Path, certs_dir: Path, fix_url: str) -> Route:
    if not mirrors:
        return Route(
            DOCKER_IO,
            source=str(file),
            problems=(f"no registry-mirrors in {file}: Docker pulls docker.io images from Docker Hub",),
            fixes=(f'add "registry-mirrors": ["{fix_url}"] to {file}; {RELOAD}',),
        )
    bad = [u for u in mirrors if urllib.parse.urlsplit(u).scheme not in ("http", "https")]
    return Route(
        DOCKER_IO,
        endpoints=tuple(_endpoint(u, certs_dir) for u in mirrors if u not in bad),
        source=str(file),
        problems=tuple(f"registry-mirrors entry {u!r} needs http:// or https://" for u in bad),
    )


def _other(registry: str, fix_url: str) -> Route:
    host = urllib.parse.urlsplit(fix_url).netloc or "MIRROR:5000"
    return Route(
        registry,
        supported=False,
        problems=(
            f"Docker Engine sends only Docker Hub pulls to registry-mirrors: {registry} is pulled directly",
        ),
        fixes=(
            f"name the images {host}/{registry}/NAME:TAG (the mirror routes that path prefix), or pull "
            "them with containerd",
        ),
    )


def read(file: Path, certs_dir: Path, registries: Sequence[str], fix_url: str) -> RuntimeConfig:
    """Read daemon.json; Docker falls back to Docker Hub silently on any mirror error."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return RuntimeConfig("docker", DOCKER, (str(file),), problems=(f"{file}: {exc}",))
    if not isinstance(data, dict):
        return RuntimeConfig("docker", DOCKER, (str(file),), problems=(f"{file}: not a JSON object",))
    mirrors = data.get("registry-mirrors") or []
    mirrors = [str(m) for m in mirrors] if isinstance(mirrors, list) else []
    routes = tuple(
        _docker_hub(mirrors, file, certs_dir, fix_url) if r == DOCKER_IO else _other(r, fix_url)
        for r in registries
    )
    notes = ("any error from the mirror makes Docker pull from Docker Hub instead, silently",)
    return RuntimeConfig("docker", DOCKER, (str(file),), routes, notes=notes)
