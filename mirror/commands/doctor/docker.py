"""Docker Engine: daemon.json `registry-mirrors` (Docker Hub only) and certs.d for an https mirror."""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from mirror.commands.doctor.model import Route, RuntimeConfig
from mirror.commands.probes import DOCKER, Endpoint
from mirror.oci import DOCKER_IO

RELOAD = "then reload dockerd (`kill -HUP $(pidof dockerd)` or `systemctl reload docker`): no restart needed"


def insecure(host: str, port: int | None, insecure_registries: Sequence[str]) -> bool:
    """Whether Docker takes this registry for insecure (no certificate check, no certs.d): every
    127.0.0.0/8 address, and each `insecure-registries` entry (a host:port or a CIDR)."""
    netloc = f"{host}:{port}" if port else host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address in ipaddress.ip_network("127.0.0.0/8"):
        return True
    for entry in insecure_registries:
        if entry in (netloc, host):
            return True
        try:
            if address is not None and address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _endpoint(url: str, certs_dir: Path, insecure_registries: Sequence[str]) -> Endpoint:
    """A mirror URL with what Docker uses there: `certs.d/<host:port>/` ca.crt and client.cert/.key, or no
    verification at all for an insecure registry."""
    parts = urllib.parse.urlsplit(url)
    if insecure(parts.hostname or "", parts.port, insecure_registries):
        return Endpoint(url=url.rstrip("/"), skip_verify=True)
    directory = certs_dir / parts.netloc
    ca = directory / "ca.crt"
    cert, key = directory / "client.cert", directory / "client.key"
    return Endpoint(
        url=url.rstrip("/"),
        ca=(str(ca),) if ca.is_file() else (),
        client=(str(cert), str(key)) if cert.is_file() and key.is_file() else None,
    )


def _docker_hub(
    mirrors: list[str], file: Path, certs_dir: Path, insecure_registries: Sequence[str], fix_url: str
) -> Route:
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
        endpoints=tuple(_endpoint(u, certs_dir, insecure_registries) for u in mirrors if u not in bad),
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


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def read(file: Path, certs_dir: Path, registries: Sequence[str], fix_url: str) -> RuntimeConfig:
    """Read daemon.json; Docker falls back to Docker Hub silently on any mirror error."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return RuntimeConfig("docker", DOCKER, (str(file),), problems=(f"{file}: {exc}",))
    if not isinstance(data, dict):
        return RuntimeConfig("docker", DOCKER, (str(file),), problems=(f"{file}: not a JSON object",))
    mirrors, insecure_registries = (
        _strings(data.get("registry-mirrors")),
        _strings(data.get("insecure-registries")),
    )
    routes = tuple(
        _docker_hub(mirrors, file, certs_dir, insecure_registries, fix_url)
        if r == DOCKER_IO
        else _other(r, fix_url)
        for r in registries
    )
    notes = ("any error from the mirror makes Docker pull from Docker Hub instead, silently",)
    return RuntimeConfig("docker", DOCKER, (str(file),), routes, notes=notes)
