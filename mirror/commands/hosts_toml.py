"""containerd's registry host files (`<config_path>/<registry>/hosts.toml`): what they say, how to write one.

containerd (CRI with `config_path` set, `ctr --hosts-dir`, nerdctl, k3s) reads these files at every pull,
so a change applies without a restart. For a registry `host[:port]` it uses the first of
`host_port_/`, `host/`, `_default/` that exists under a root of `config_path` (a colon-separated list,
searched in order), and tries the `[host."..."]` entries in file order before `server` (default: the
registry itself). Pure: parsing takes text, rendering returns text; the commands do the file work.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.oci import DOCKER_HUB, DOCKER_IO

DEFAULT_DIR = "_default"  # containerd's catch-all directory for registries without their own
# The first line of every file `mirror node-config` writes: `--remove` deletes a file only if it has it.
OWNER_MARKER = "# Written by `mirror node-config`, which rewrites or removes it: edit the mirror's settings."
ALL_CAPABILITIES = ("pull", "resolve", "push")  # containerd's default for a host without `capabilities`


@dataclass(frozen=True)
class Host:
    """One `[host."URL"]` entry: an endpoint containerd tries, in file order, before `server`."""

    url: str  # as written; containerd assumes https:// when there is no scheme
    capabilities: tuple[str, ...] = ALL_CAPABILITIES
    skip_verify: bool = False
    ca: tuple[str, ...] = ()
    client: tuple[str, str] | None = None  # the first (certificate, key) pair of `client`
    headers: tuple[tuple[str, str], ...] = ()
    override_path: bool = False

    @property
    def full_url(self) -> str:
        """The URL with the scheme containerd uses when none is written (https)."""
        return self.url if "://" in self.url else f"https://{self.url}"

    @property
    def pulls(self) -> bool:
        """Whether containerd fetches content (blobs, manifests by digest) from this host."""
        return "pull" in self.capabilities

    @property
    def resolves(self) -> bool:
        """Whether containerd resolves tags to digests here (else tags go to `server`)."""
        return "resolve" in self.capabilities


@dataclass(frozen=True)
class HostsFile:
    """A parsed hosts.toml."""

    server: str | None
    hosts: tuple[Host, ...]
    owned: bool  # written by `mirror node-config`


def server_for(registry: str) -> str:
    """The upstream a registry's hosts.toml falls back to: registry-1.docker.io for docker.io, else itself."""
    return DOCKER_HUB if registry == DOCKER_IO else f"https://{registry}"


def host_dirs(registry: str) -> tuple[str, ...]:
    """The directory names containerd looks for, in order, under one root for `registry` (host[:port])."""
    names: list[str] = []
    host, colon, port = registry.rpartition(":")
    if colon and host and port.isdigit():
        names.append(f"{host}_{port}_")
    return (*names, registry, DEFAULT_DIR)


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


def _client(value: Any) -> tuple[str, str] | None:
    """hosts.toml `client`: "cert" (key inside), ["cert", "key"], or [["cert", "key"], ...]."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, str):
        return (value, value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return (value[0], value[1])
    return None


def _host(url: str, table: dict[str, Any]) -> Host:
    headers = tuple(
        (str(name), v) for name, values in dict(table.get("header", {})).items() for v in _strings(values)
    )
    caps = table.get("capabilities")
    return Host(
        url=url,
        capabilities=_strings(caps) if caps is not None else ALL_CAPABILITIES,
        skip_verify=bool(table.get("skip_verify", False)),
        ca=_strings(table.get("ca")),
        client=_client(table.get("client")),
        headers=headers,
        override_path=bool(table.get("override_path", False)),
    )


def parse(text: str) -> HostsFile:
    """A hosts.toml's content; raises ValueError (tomllib's) on bad TOML."""
    data = tomllib.loads(text)
    hosts = tuple(_host(url, table) for url, table in dict(data.get("host", {})).items())
    server = data.get("server")
    return HostsFile(
        server=str(server) if server is not None else None,
        hosts=hosts,
        owned=text.startswith(OWNER_MARKER),
    )


def _quoted(value: str) -> str:
    # A JSON string is a TOML basic string for everything json.dumps emits (it never writes "\/").
    return json.dumps(value)


def render(
    registry: str,
    mirror_url: str,
    *,
    ca: str | None = None,
    skip_verify: bool = False,
    client: tuple[str, str] | None = None,
    authorization: str | None = None,
) -> str:
    """The hosts.toml `mirror node-config` writes for `registry`: the mirror first (pull + resolve), with
    its CA, client certificate and Authorization header if given, then the registry itself as `server`.
    containerd always ends with that fallback (written or not); `_default` leaves it unwritten, so it is
    whichever registry the image names."""
    lines = [OWNER_MARKER]
    if registry != DEFAULT_DIR:
        lines.append(f"server = {_quoted(server_for(registry))}")
    lines += ["", f"[host.{_quoted(mirror_url)}]", '  capabilities = ["pull", "resolve"]']
    if ca is not None:
        lines.append(f"  ca = {_quoted(ca)}")
    if skip_verify:
        lines.append("  skip_verify = true")
    if client is not None:
        lines.append(f"  client = [[{_quoted(client[0])}, {_quoted(client[1])}]]")
    if authorization is not None:
        lines += [f"  [host.{_quoted(mirror_url)}.header]", f"    Authorization = [{_quoted(authorization)}]"]
    return "\n".join(lines) + "\n"


def find(roots: Sequence[Path], registry: str) -> Path | None:
    """The host directory containerd uses for `registry` under `roots` (config_path order), if any."""
    for root in roots:
        for name in host_dirs(registry):
            if (root / name).is_dir():
                return root / name
    return None
