"""`mirror node-config` against a real containerd: its hosts.toml files route pulls through the mirror."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.mirrorproc import MirrorProcess
from tests.support.registry import Registry
from tests.support.runtimes import Containerd, DaemonError, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture
def mirror(tmp_path: Path, upstream: Registry) -> Iterator[MirrorProcess]:
    """A fresh mirror (empty cache) whose upstream is the seeded registry."""
    with MirrorProcess(tmp_path / "mirror", upstream.url) as proc:
        yield proc


def node_config(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m mirror node-config ARGS` as the init container does."""
    return subprocess.run(
        [sys.executable, "-m", "mirror", "node-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_containerd_pulls_through_the_mirror_after_node_config_and_not_after_remove(
    tmp_path: Path, upstream: Registry, catalog: Catalog, mirror: MirrorProcess
) -> None:
    """After node-config ctr pulls through the mirror; after --remove the files are gone and it doesn't."""
    certs = tmp_path / "certs.d"
    written = node_config("--mirror", mirror.url, "--certs-dir", str(certs), "--default")
    assert written.returncode == 0, written.stderr
    assert (certs / "docker.io" / "hosts.toml").is_file()
    before = upstream.mark()
    with Containerd(tmp_path / "containerd") as ctd:
        ref = "docker.io/library/ociimg:latest"
        assert ctd.pull(ref, certs) == catalog.ociimg.manifest_digest
        assert {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(before)} == catalog.ociimg.blobs
        removed = node_config("--certs-dir", str(certs), "--remove")
        assert removed.returncode == 0, removed.stderr
        assert list(certs.iterdir()) == []
        with pytest.raises(DaemonError, match=r"registry-1\.docker\.io"):
            ctd.pull(ref, certs, namespace="after-remove")  # straight to Docker Hub: no DNS here


def test_kubelets_path_reads_node_config_files_without_a_containerd_restart(
    tmp_path: Path, upstream: Registry, catalog: Catalog, mirror: MirrorProcess
) -> None:
    """CRI pulls (kubelet's path) go through the mirror once node-config writes into config_path, and
    stop doing so once --remove deletes the files: the same containerd, never restarted."""
    certs = tmp_path / "certs.d"
    certs.mkdir()
    with Containerd(tmp_path / "containerd", config_path=certs, cri=True) as ctd:
        pid = ctd.pid
        assert node_config("--mirror", mirror.url, "--certs-dir", str(certs)).returncode == 0
        before = upstream.mark()
        assert ctd.cri_pull("docker.io/library/v2img:latest") == catalog.v2img.config_digest
        assert {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(before)} == catalog.v2img.blobs
        assert node_config("--certs-dir", str(certs), "--remove").returncode == 0
        with pytest.raises(DaemonError, match=r"registry-1\.docker\.io"):
            ctd.cri_pull("docker.io/library/ociimg:latest")
        assert ctd.pid == pid
