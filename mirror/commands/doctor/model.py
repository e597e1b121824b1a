"""What `mirror doctor` learns from a runtime's configuration: per registry, where its pulls go first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mirror.commands.probes import Endpoint, PullStyle


@dataclass(frozen=True)
class Route:
    """Where one runtime sends one registry's pulls, according to its configuration."""

    registry: str
    endpoints: tuple[Endpoint, ...] = ()  # tried in this order before the registry itself
    source: str | None = None  # the file (or directory) that decided
    problems: tuple[str, ...] = ()  # what keeps pulls from the mirror, or makes them fragile
    fixes: tuple[str, ...] = ()
    supported: bool = True  # False: this runtime cannot send this registry to a mirror at all


@dataclass(frozen=True)
class RuntimeConfig:
    """One runtime's configuration as read from its files."""

    runtime: str  # containerd, docker, podman, k3s, rke2
    style: PullStyle
    files: tuple[str, ...] = ()  # the files read
    routes: tuple[Route, ...] = ()
    problems: tuple[str, ...] = ()  # runtime-wide: unreadable file, config_path unset, ...
    fixes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


# Each runtime file's place on a node (relative to the root), by the name of its `Paths` field.
DEFAULT_FILES = {
    "containerd_config": "etc/containerd/config.toml",
    "docker_daemon_json": "etc/docker/daemon.json",
    "docker_certs_dir": "etc/docker/certs.d",
    "registries_conf": "etc/containers/registries.conf",
    "registries_conf_d": "etc/containers/registries.conf.d",
    "k3s_registries": "etc/rancher/k3s/registries.yaml",
    "rke2_registries": "etc/rancher/rke2/registries.yaml",
}


@dataclass(frozen=True)
class Paths:
    """Where the runtimes' files are; `root` prefixes paths named inside them (e.g. config_path)."""

    root: Path
    containerd_config: Path
    docker_daemon_json: Path
    docker_certs_dir: Path
    registries_conf: Path
    registries_conf_d: Path
    k3s_registries: Path
    rke2_registries: Path
    explicit: frozenset[str] = field(default_factory=frozenset)  # runtimes whose files were named by flag

    @classmethod
    def under(cls, root: Path, explicit: frozenset[str] = frozenset(), **files: Path | None) -> Paths:
        """Every file at its default place under `root` unless given in `files` (None: the default)."""
        chosen = {key: files.get(key) or root / default for key, default in DEFAULT_FILES.items()}
        return cls(root=root, explicit=explicit, **chosen)

    def on_node(self, path: str) -> Path:
        """A path as the node names it (absolute), under `root`."""
        posix = PurePosixPath(path)
        return self.root / posix.relative_to("/") if posix.is_absolute() else self.root / posix
