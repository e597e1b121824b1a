"""`python -m mirror warm` against `python -m mirror serve` in front of the real docker-registry upstream."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.mirrorproc import MirrorProcess
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf


@pytest.fixture
def mirror(tmp_path: Path, upstream: Registry) -> Iterator[MirrorProcess]:
    """A fresh mirror (empty cache) whose upstream is the seeded registry."""
    with MirrorProcess(tmp_path / "mirror", upstream.url) as proc:
        yield proc


def warm(mirror: MirrorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m mirror warm ARGS... --mirror URL` with no MIRROR_* variables from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    return subprocess.run(
        [sys.executable, "-m", "mirror", "warm", *args, "--mirror", mirror.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fetched_blobs(upstream: Registry, since: int) -> set[str]:
    return {r.route.rsplit("/", 1)[1] for r in upstream.blob_gets(since)}


def test_warm_fills_one_platform_so_a_pull_sends_nothing_upstream(
    catalog: Catalog,
    upstream: Registry,
    mirror: MirrorProcess,
    skopeo_tmp: Path,
    tmp_path: Path,
) -> None:
    """Warming linux/amd64 of an index fetches that child's blobs only; a skopeo pull then sends no
    blob or manifest GET upstream."""
    amd64, arm64 = catalog.multi.child("amd64"), catalog.multi.child("arm64")
    mark = upstream.mark()
    done = warm(mirror, "docker.io/library/multi:latest", "--platform", "linux/amd64")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "linux/amd64" in done.stdout
    fetched = fetched_blobs(upstream, mark)
    assert fetched == set(amd64.blobs)
    assert not fetched & arm64.blobs
    conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)
    mark = upstream.mark()
    out = tmp_path / "out"
    skopeo_copy(
        f"docker.io/{catalog.multi.ref}",
        out,
        registries_conf=conf,
        tmpdir=skopeo_tmp,
        format="dir",
        override_arch="amd64",
    )
    assert amd64.blobs <= layout_digests(out)
    assert upstream.blob_gets(mark) == []
    assert upstream.manifest_gets(mark) == []


def test_warm_of_a_missing_image_exits_1_with_the_registry_code(
    upstream: Registry, mirror: MirrorProcess
) -> None:
    """An image the upstream does not have makes `warm` exit 1, its row naming MANIFEST_UNKNOWN."""
    done = warm(mirror, "docker.io/library/absent:1")
    assert done.returncode == 1
    assert "error MANIFEST_UNKNOWN" in done.stdout
