"""Run podman hermetically as root: its own storage (vfs under a temp graphroot), containers.conf and
registries.conf, through the CONTAINERS_* variables podman 4.3 honours."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

PODMAN_TIMEOUT_S = 120


class Podman:
    """A podman whose every file lives under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        for sub in ("graph", "run", "tmp", "home"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.storage_conf = workdir / "storage.conf"
        self.storage_conf.write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{workdir / "graph"}"\nrunroot = "{workdir / "run"}"\n'
        )
        self.containers_conf = workdir / "containers.conf"
        self.containers_conf.write_text(
            f'[engine]\ntmp_dir = "{workdir / "tmp"}"\nevents_logger = "none"\ncgroup_manager = "cgroupfs"\n'
        )

    def run(
        self, args: Sequence[str], registries_conf: Path, *, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """`podman ARGS` with this podman's files; raises CalledProcessError if `check` and it fails."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "REGISTRY_AUTH"))}
        env.update(
            HOME=str(self.workdir / "home"),
            TMPDIR=str(self.workdir / "tmp"),
            CONTAINERS_REGISTRIES_CONF=str(registries_conf),
            CONTAINERS_STORAGE_CONF=str(self.storage_conf),
            CONTAINERS_CONF=str(self.containers_conf),
            REGISTRY_AUTH_FILE=str(self.workdir / "auth.json"),
        )
        result = subprocess.run(
            ["podman", *args], env=env, capture_output=True, timeout=PODMAN_TIMEOUT_S, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return result
