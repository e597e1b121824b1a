"""`mirror doctor` against a real mirror, a private containerd and a private Docker engine."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.catalog import Catalog
from tests.support.htpasswd import htpasswd_add
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import basic_auth
from tests.support.registry import Registry
from tests.support.runtimes import Containerd, Dockerd, available
from tests.support.skopeo import skopeo_inspect
from tests.support.tls import TestCa, TlsFiles

needs_daemons = pytest.mark.skipif(available() is not None, reason=str(available()))
IMAGE = "docker.io/library/v2img:latest"


@pytest.fixture
def mirror(tmp_path: Path, upstream: Registry) -> Iterator[MirrorProcess]:
    """A fresh mirror (empty cache) whose upstream is the seeded registry."""
    with MirrorProcess(tmp_path / "mirror", upstream.url) as proc:
        yield proc


def doctor(*args: str, image: str = IMAGE) -> tuple[int, dict[str, Any]]:
    """`python -m mirror doctor --json --image IMAGE ARGS`: (exit status, report)."""
    done = subprocess.run(
        [sys.executable, "-m", "mirror", "doctor", "--json", "--image", image, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def finding(report: dict[str, Any], runtime: str, registry: str = "docker.io") -> dict[str, Any]:
    entry = next(r for r in report["runtimes"] if r["runtime"] == runtime)
    found: dict[str, Any] = next(f for f in entry["registries"] if f["registry"] == registry)
    return found


@needs_daemons
def test_doctor_agrees_with_a_real_containerd_configured_by_node_config(
    tmp_path: Path, catalog: Catalog, mirror: MirrorProcess
) -> None:
    """doctor reads containerd's config_path, proves the pull with ?ns=; kubelet's CRI pull then agrees."""
    certs = tmp_path / "certs.d"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mirror",
            "node-config",
            "--mirror",
            mirror.url,
            "--certs-dir",
            str(certs),
        ],
        check=True,
        capture_output=True,
    )
    with Containerd(tmp_path / "containerd", config_path=certs, cri=True) as ctd:
        code, report = doctor(
            "--containerd-config", str(ctd.config_file), "--runtime", "containerd", "--mirror", mirror.url
        )
        assert code == 0, report
        found = finding(report, "containerd")
        assert found["probe"]["digest"] == catalog.v2img.manifest_digest
        assert [r.split()[0] for r in found["probe"]["requests"]] == ["HEAD", "GET"]
        assert all("?ns=docker.io " in r for r in found["probe"]["requests"])
        assert report["runtimes"][0]["notes"] == [f"config_path = {certs}"]  # CRI on: no note about it
        assert ctd.cri_pull(IMAGE) == catalog.v2img.config_digest
        assert ctd.pull(IMAGE, certs) == found["probe"]["digest"]


@needs_daemons
def test_doctor_agrees_with_a_real_docker_engine(tmp_path: Path, mirror: MirrorProcess) -> None:
    """doctor reads dockerd's daemon.json, proves the pull as Docker asks; docker pull gets that digest."""
    with Dockerd(tmp_path / "dockerd", {"registry-mirrors": [mirror.url]}) as engine:
        code, report = doctor("--docker-daemon-json", str(engine.daemon_json_path), "--runtime", "docker")
        assert code == 0, report
        found = finding(report, "docker")
        assert [r.split()[0] for r in found["probe"]["requests"]] == ["GET", "HEAD", "GET"]
        pulled = engine.pull("library/v2img:latest")
    assert pulled["RepoDigests"] == [f"v2img@{found['probe']['digest']}"]


def test_doctor_with_the_mirror_down_says_unreachable_and_exits_1(
    tmp_path: Path, mirror: MirrorProcess
) -> None:
    """A configured but stopped mirror fails the probe: a problem naming the request, exit 1."""
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"registry-mirrors": [mirror.url]}))
    mirror.stop()
    code, report = doctor("--docker-daemon-json", str(daemon_json), "--runtime", "docker")
    assert code == 1
    found = finding(report, "docker")
    assert found["status"] == "problem"
    assert "ConnectionRefusedError" in found["probe"]["requests"][0]
    assert "/readyz" in found["fixes"][0]


def test_doctor_reports_an_image_the_mirror_cannot_serve(tmp_path: Path, mirror: MirrorProcess) -> None:
    """A probe image missing upstream is a problem quoting the mirror's registry error code."""
    root = tmp_path / "root"
    (root / "etc" / "containerd").mkdir(parents=True)
    (root / "etc" / "containerd" / "config.toml").write_text("version = 3\n")  # certs.d by default
    certs = str(root / "etc" / "containerd" / "certs.d")
    node_config = [
        sys.executable,
        "-m",
        "mirror",
        "node-config",
        "--mirror",
        mirror.url,
        "--certs-dir",
        certs,
    ]
    subprocess.run(node_config, check=True, capture_output=True)
    code, report = doctor("--root", str(root), image="docker.io/library/nope:1")
    assert code == 1
    probe = finding(report, "containerd")["probe"]
    assert probe["image"] == "docker.io/library/nope:1"
    assert "404 MANIFEST_UNKNOWN" in probe["error"]


def test_doctor_probes_podman_style_with_the_http_fallback_skopeo_uses(
    tmp_path: Path, catalog: Catalog, mirror: MirrorProcess, skopeo_tmp: Path
) -> None:
    """An insecure registries.conf mirror is tried over https, then http; skopeo gets doctor's digest."""
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        f'[[registry.mirror]]\nlocation = "{mirror.host}"\ninsecure = true\n'
    )
    code, report = doctor("--registries-conf", str(conf), "--runtime", "podman", "--mirror", mirror.url)
    assert code == 0, report
    probe = finding(report, "podman")["probe"]
    assert probe["requests"][0].startswith(f"GET https://{mirror.host}/v2/ -> ")
    assert probe["requests"][1] == f"GET http://{mirror.host}/v2/ -> 200"
    inspected = skopeo_inspect(
        f"docker.io/{catalog.v2img.name}:latest", registries_conf=conf, tmpdir=skopeo_tmp
    )
    assert inspected["Digest"] == probe["digest"]


@needs_daemons
def test_doctor_and_kubelet_pull_through_an_https_mirror_that_wants_credentials(
    tmp_path: Path, upstream: Registry, catalog: Catalog
) -> None:
    """node-config --ca --authorization-file: doctor proves the pull over verified HTTPS with the header,
    and the CRI pull agrees; the same files without the header are a 401 problem."""
    ca = TestCa(tmp_path / "ca")
    pair = ca.issue("server")
    htpasswd = htpasswd_add(tmp_path / "htpasswd", "node", "secret", create=True)
    env = {"MIRROR_AUTH_HTPASSWD": str(htpasswd)}
    with MirrorProcess(
        tmp_path / "mirror", upstream.url, env, tls=TlsFiles(ca.ca, pair.cert, pair.key)
    ) as mirror:
        authorization = tmp_path / "authorization"
        authorization.write_text(basic_auth("node", "secret"))
        certs = tmp_path / "certs.d"
        flags = ["--mirror", mirror.url, "--certs-dir", str(certs), "--ca", str(ca.ca)]
        node_config = [sys.executable, "-m", "mirror", "node-config", *flags]
        subprocess.run(
            [*node_config, "--authorization-file", str(authorization)], check=True, capture_output=True
        )
        with Containerd(tmp_path / "containerd", config_path=certs, cri=True) as ctd:
            code, report = doctor("--containerd-config", str(ctd.config_file), "--runtime", "containerd")
            assert code == 0, report
            assert finding(report, "containerd")["probe"]["digest"] == catalog.v2img.manifest_digest
            assert ctd.cri_pull(IMAGE) == catalog.v2img.config_digest
            subprocess.run(node_config, check=True, capture_output=True)  # rewritten without the header
            code, report = doctor("--containerd-config", str(ctd.config_file), "--runtime", "containerd")
    assert code == 1
    assert "401" in finding(report, "containerd")["probe"]["error"]
