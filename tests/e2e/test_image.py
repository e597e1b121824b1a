"""The container image as users get it: built from deploy/docker/Dockerfile with Debian's podman on a
debootstrapped Debian base (no registry needed), run read-only without capabilities, and pulled through.

Skips, saying why, when not root (debootstrap and rootful podman) or when podman or debootstrap is
missing. The base is made once per machine (scripts/build-debian-base caches it) and podman's layer cache
keeps the locked dependencies, so a warm run rebuilds only the package layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.catalog import Catalog
from tests.support.net import free_port, raw_request, wait_http
from tests.support.registry import Registry
from tests.support.skopeo import layout_digests, skopeo_copy, write_registries_conf
from tests.support.tls import make_tls

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/mirror:test"
IMAGE_UID = 10001
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: A cold build (debootstrap, then the locked wheels) takes about a minute here, several on a loaded
#: machine; bounds a hung one. The first test pays for it, hence the module's timeout.
BUILD_TIMEOUT_S = 600
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
# What this machine's podman needs (DESIGN.md part 3): runc (crun refuses the cgroup setup), rlimits
# that cannot be raised, the host network (the mirror listens on loopback, like the registry upstream).
RUN_FLAGS = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
    "--network",
    "host",
]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root: debootstrap makes the base and the build uses rootful podman (make test as root)"
    missing = [tool for tool in ("podman", "debootstrap", "runc") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (scripts/install-system-deps installs them as root)"
    return None


def _run(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    """localhost/mirror:test, built by `scripts/build-image` on the cached Debian base."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    base = _run(str(ROOT / "scripts" / "build-debian-base"), timeout=BUILD_TIMEOUT_S)
    env = dict(os.environ, BASE_IMAGE=base, BUILD_FLAGS="--isolation=chroot")
    if CA_BUNDLE.exists():  # package downloads here pass a TLS-intercepting proxy
        env["EXTRA_CA"] = str(CA_BUNDLE)
    before = _image_id(TAG)
    _run(str(ROOT / "scripts" / "build-image"), TAG, timeout=BUILD_TIMEOUT_S, env=env)
    if before and before != _image_id(TAG):
        # The previous test image, untagged by this build: removed so runs do not pile up images. The
        # build stage's layers stay: they are the cache that makes the next build quick.
        subprocess.run(["podman", "rmi", before], capture_output=True, timeout=60, check=False)
    return TAG


def _image_id(tag: str) -> str | None:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


@dataclass(frozen=True)
class Container:
    id: str
    host: str  # 127.0.0.1:PORT


@contextlib.contextmanager
def running(
    image: str,
    upstream: Registry,
    workdir: Path,
    *extra: str,
    scheme: str = "http",
    cafile: Path | None = None,
) -> Iterator[Container]:
    """The image run `--read-only --cap-drop=ALL` as its default non-root user, upstream the registry;
    `extra` are more `podman run` flags (volumes, environment). Removed by its id afterwards."""
    port = free_port()
    cache = workdir / "cache"
    cache.mkdir(parents=True)
    os.chown(cache, IMAGE_UID, IMAGE_UID)  # as the DaemonSet's init container does for its hostPath
    cid = _run(
        "podman",
        "run",
        "--detach",
        "--name",
        f"mirror-test-{uuid.uuid4().hex[:12]}",
        *RUN_FLAGS,
        "--read-only",
        "--cap-drop=ALL",
        "--tmpfs",
        "/tmp",  # noqa: S108 (the container's own /tmp, a fresh tmpfs)
        "--volume",
        f"{cache}:/var/cache/mirror",
        "--env",
        f"MIRROR_LISTEN=127.0.0.1:{port}",
        "--env",
        f"MIRROR_UPSTREAM={upstream.url}",
        *extra,
        image,
    )
    try:
        wait_http(f"{scheme}://127.0.0.1:{port}/readyz", deadline_s=30, cafile=cafile)
        yield Container(cid, f"127.0.0.1:{port}")
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "5", cid], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def container(
    image: str, upstream: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    """The image running plain HTTP, shared by the tests of this module."""
    with running(image, upstream, tmp_path_factory.mktemp("image")) as found:
        yield found


def test_image_pulls_through_with_exact_digests(
    container: Container, catalog: Catalog, skopeo_tmp: Path, tmp_path: Path
) -> None:
    """skopeo pulls an image through the containerised mirror and gets exactly the upstream's blobs."""
    conf = write_registries_conf(tmp_path / "registries.conf", container.host)
    out = tmp_path / "out"
    skopeo_copy(f"docker.io/{catalog.v2img.ref}", out, registries_conf=conf, tmpdir=skopeo_tmp, format="dir")
    assert catalog.v2img.blobs <= layout_digests(out)
    manifest = (out / "manifest.json").read_bytes()
    assert f"sha256:{hashlib.sha256(manifest).hexdigest()}" == catalog.v2img.manifest_digest


def test_image_runs_read_only_without_capabilities_as_non_root(container: Container) -> None:
    """The mirror process runs as uid 10001 with no capabilities on a read-only root filesystem."""
    state = json.loads(_run("podman", "inspect", container.id))[0]
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    pid = state["State"]["Pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[:2] == [str(IMAGE_UID), str(IMAGE_UID)]
    assert int(fields["CapEff"], 16) == 0
    assert int(fields["CapPrm"], 16) == 0


def test_image_keeps_its_healthcheck(image: str, container: Container) -> None:
    """The image carries the HEALTHCHECK (Docker format) and it passes against the running mirror."""
    inspected = json.loads(_run("podman", "image", "inspect", image))[0]
    assert inspected["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])
    done = subprocess.run(["podman", "healthcheck", "run", container.id], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_image_reports_the_git_revision_it_was_built_from(container: Container) -> None:
    """`mirror_build_info` of the image carries this checkout's git revision (GIT_REVISION at build)."""
    revision = _run("git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12", "--exclude=*")
    body = raw_request("GET", f"http://{container.host}/metrics").body.decode()
    (line,) = [line for line in body.splitlines() if line.startswith("mirror_build_info{")]
    assert f'revision="{revision}"' in line


def test_image_serves_https_from_read_only_mounted_files(
    image: str, upstream: Registry, catalog: Catalog, skopeo_tmp: Path, tmp_path: Path
) -> None:
    """With a certificate and key mounted read-only (as the chart mounts a Secret) and MIRROR_TLS_*, the
    image serves HTTPS, and skopeo, verifying it against the CA, pulls through it."""
    tls = make_tls(tmp_path / "tls")
    os.chown(tls.key, IMAGE_UID, IMAGE_UID)  # a Secret volume with fsGroup 10001 gives the same access
    tls.key.chmod(0o400)
    mounted = [
        "--volume",
        f"{tls.cert.parent}:/etc/mirror/tls:ro",
        "--env",
        f"MIRROR_TLS_CERT=/etc/mirror/tls/{tls.cert.name}",
        "--env",
        f"MIRROR_TLS_KEY=/etc/mirror/tls/{tls.key.name}",
    ]
    with running(image, upstream, tmp_path / "mirror", *mounted, scheme="https", cafile=tls.ca) as found:
        certs = tmp_path / "certs"
        certs.mkdir()
        shutil.copy(tls.ca, certs / "ca.crt")
        conf = write_registries_conf(tmp_path / "registries.conf", found.host, insecure=False)
        out = tmp_path / "out"
        skopeo_copy(
            f"docker.io/{catalog.v2img.ref}",
            out,
            registries_conf=conf,
            tmpdir=skopeo_tmp,
            format="dir",
            extra_args=["--src-cert-dir", str(certs)],
        )
    assert catalog.v2img.blobs <= layout_digests(out)
