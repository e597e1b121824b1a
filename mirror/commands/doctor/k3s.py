"""k3s and RKE2: registries.yaml, which they turn into containerd hosts.toml files when they start."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mirror.commands.doctor.model import Paths, Route, RuntimeConfig
from mirror.commands.probes import CONTAINERD, Endpoint


def _endpoint(url: str, configs: dict[str, Any], paths: Paths) -> Endpoint:
    full = url if "://" in url else f"https://{url}"
    host = urllib.parse.urlsplit(full).netloc
    entry = configs.get(host)
    tls = entry.get("tls") if isinstance(entry, dict) else None
    tls = tls if isinstance(tls, dict) else {}
    ca = (str(paths.on_node(str(tls["ca_file"]))),) if tls.get("ca_file") else ()
    client = None
    if tls.get("cert_file") and tls.get("key_file"):
        client = (str(paths.on_node(str(tls["cert_file"]))), str(paths.on_node(str(tls["key_file"]))))
    return Endpoint(
        url=full.rstrip("/"),
        ca=ca,
        skip_verify=bool(tls.get("insecure_skip_verify")),
        client=client,
        headers=_authorization(entry.get("auth") if isinstance(entry, dict) else None),
    )


def _authorization(auth: Any) -> tuple[tuple[str, str], ...]:
    """registries.yaml `auth` as the header k3s's containerd sends: username/password, auth, or a token."""
    if not isinstance(auth, dict):
        return ()
    if auth.get("username") is not None:
        raw = f"{auth['username']}:{auth.get('password', '')}".encode()
        return (("Authorization", "Basic " + base64.b64encode(raw).decode()),)
    if auth.get("auth"):
        return (("Authorization", f"Basic {auth['auth']}"),)
    if auth.get("identity_token"):
        return (("Authorization", f"Bearer {auth['identity_token']}"),)
    return ()


def _route(
    mirrors: dict[str, Any], configs: dict[str, Any], registry: str, file: Path, paths: Paths, fix: str
) -> Route:
    entry = mirrors.get(registry, mirrors.get("*"))
    urls = entry.get("endpoint") if isinstance(entry, dict) else None
    if not isinstance(urls, list) or not urls:
        return Route(
            registry,
            source=str(file),
            problems=(f'no mirrors entry for {registry} (or "*") in {file}: pulls go straight to it',),
            fixes=(f'mirrors: {{"{registry}": {{endpoint: ["{fix}"]}}}} in {file}, then restart k3s/rke2',),
        )
    return Route(registry, endpoints=tuple(_endpoint(str(u), configs, paths) for u in urls), source=str(file))


def read(runtime: str, file: Path, registries: Sequence[str], paths: Paths, fix_url: str) -> RuntimeConfig:
    """Read registries.yaml (`runtime` is k3s or rke2; both embed containerd, so pulls carry ?ns=)."""
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return RuntimeConfig(runtime, CONTAINERD, (str(file),), problems=(f"{file}: {exc}",))
    if not isinstance(data, dict):
        return RuntimeConfig(runtime, CONTAINERD, (str(file),), problems=(f"{file}: not a YAML mapping",))
    mirrors = data.get("mirrors") if isinstance(data.get("mirrors"), dict) else {}
    configs = data.get("configs") if isinstance(data.get("configs"), dict) else {}
    routes = tuple(_route(mirrors or {}, configs or {}, r, file, paths, fix_url) for r in registries)
    notes = (
        f"{runtime} writes containerd hosts.toml files from {file.name} when it starts: "
        f"restart {runtime} after changing it",
    )
    return RuntimeConfig(runtime, CONTAINERD, (str(file),), routes, notes=notes)
