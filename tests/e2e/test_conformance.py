"""The OCI distribution-spec conformance suite (v1.1.1, pull workflow) against the mirror in front of a
real docker-registry: all 14 pull specs pass.

The suite is a compiled Go test binary, `../shared/tools/oci-conformance.test` (or `$OCI_CONFORMANCE_BIN`);
the README says how to build it. Without it the test is skipped, and fails under CI (`CI=true`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "conformance/pull"
TAG = "tagtest0"  # the tag the suite's "Pull Setup" pushes
PULL_SPECS = 14
#: The whole suite runs in well under a second here; this only bounds a hung run.
SUITE_TIMEOUT = 120


def conformance_binary() -> Path:
    """The suite's binary, or a skip (a failure under CI) saying where it was looked for."""
    path = Path(os.environ.get("OCI_CONFORMANCE_BIN", ROOT.parent / "shared/tools/oci-conformance.test"))
    if not os.access(path, os.X_OK):
        message = (
            f"OCI conformance binary not found at {path}: build it as the README says "
            "(Testing, OCI conformance) or set OCI_CONFORMANCE_BIN"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_suite(
    binary: Path, root_url: str, workdir: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the pull workflow of the suite against `root_url`; `args` are ginkgo flags, `env` OCI_* ones."""
    suite_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "OCI_ROOT_URL": root_url,
        "OCI_NAMESPACE": NAMESPACE,
        "OCI_TEST_PULL": "1",
        "OCI_TEST_PUSH": "0",
        "OCI_TEST_CONTENT_DISCOVERY": "0",
        "OCI_TEST_CONTENT_MANAGEMENT": "0",
        "OCI_REPORT_DIR": "none",
        **env,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(binary), "-ginkgo.no-color", "-ginkgo.v", *args],
        env=suite_env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )


def seeded_digests(registry: Registry) -> tuple[str, str]:
    """(manifest digest, config blob digest) of what the suite's setup pushed under `TAG`."""
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    resp = raw_request("GET", f"{registry.url}/v2/{NAMESPACE}/manifests/{TAG}", headers=accept)
    assert resp.status == 200, resp.body[:300]
    doc = json.loads(resp.body)
    return resp.headers["docker-content-digest"], doc["config"]["digest"]


def test_pull_workflow_passes_14_of_14(make_registry: Callable[..., Registry], tmp_path: Path) -> None:
    """The suite's pull workflow against the mirror: 14 of 14 specs pass, invalid references included."""
    binary = conformance_binary()
    upstream = make_registry()
    setup = run_suite(binary, upstream.url, tmp_path / "setup", "-ginkgo.focus=Pull Setup")
    assert setup.returncode == 0, setup.stdout[-3000:]
    manifest, blob = seeded_digests(upstream)
    with MirrorProcess(tmp_path / "mirror", upstream.url) as mirror:
        mark = upstream.mark()
        result = run_suite(
            binary,
            mirror.url,
            tmp_path / "pull",
            OCI_TAG_NAME=TAG,
            OCI_MANIFEST_DIGEST=manifest,
            OCI_BLOB_DIGEST=blob,
        )
        seen = upstream.requests(mark)
    summary = re.search(r"Ran (\d+) of \d+ Specs.*?(\d+) Passed \| (\d+) Failed", result.stdout, re.S)
    assert summary is not None, result.stdout[-3000:]
    assert (int(summary[1]), int(summary[2]), int(summary[3])) == (PULL_SPECS, PULL_SPECS, 0), result.stdout[
        -3000:
    ]
    assert result.returncode == 0
    assert not [r for r in seen if "INVALID" in r.path or r.method not in ("GET", "HEAD")]
