"""Unit tests for mirror.build and the release files: version and git revision, LICENSE, the locks."""

from __future__ import annotations

import configparser
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from mirror import __version__, build, cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_revision() -> None:
    """Forget a revision another test computed (build.revision() is cached per process)."""
    build.revision.cache_clear()


def _setup_cfg() -> configparser.ConfigParser:
    parsed = configparser.ConfigParser()
    parsed.read(ROOT / "setup.cfg")
    return parsed


def test_version_flag_prints_version_and_git_revision(capsys: pytest.CaptureFixture[str]) -> None:
    """`mirror --version` prints the package version and this checkout's git revision, exit 0."""
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    expected = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12", "--exclude=*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert capsys.readouterr().out.strip() == f"mirror {__version__} (git {expected})"


def test_revision_file_wins_over_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A REVISION file written by an image build is the revision, whatever git would say."""
    recorded = tmp_path / "REVISION"
    recorded.write_text("0123456789ab\n")
    monkeypatch.setattr(build, "REVISION_FILE", recorded)
    assert build.revision() == "0123456789ab"


def test_revision_unknown_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed without a REVISION file and outside its own git checkout, the revision is `unknown`."""
    monkeypatch.setattr(build, "REVISION_FILE", tmp_path / "REVISION")
    monkeypatch.setattr(build, "PACKAGE_DIR", tmp_path / "site-packages" / "mirror")
    assert build.revision() == "unknown"


def test_revision_of_another_repository_is_not_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package directory inside some other git repository does not report that repository's HEAD."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "venv" / "mirror").mkdir(parents=True)
    (tmp_path / "venv" / ".git").write_text("gitdir: nowhere\n")  # looks like a checkout, is not its top
    monkeypatch.setattr(build, "REVISION_FILE", tmp_path / "REVISION")
    monkeypatch.setattr(build, "PACKAGE_DIR", tmp_path / "venv" / "mirror")
    assert build.revision() == "unknown"


def test_license_file_matches_setup_cfg() -> None:
    """setup.cfg declares Apache-2.0 and LICENSE holds the Apache License 2.0 text."""
    assert _setup_cfg()["metadata"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


@pytest.mark.parametrize(
    ("lock", "sections"),
    [("requirements.lock", ["install_requires"]), ("requirements-test.lock", ["install_requires", "test"])],
)
def test_locks_pin_every_declared_dependency_with_hashes(lock: str, sections: list[str]) -> None:
    """Each lock pins (==, with a sha256 hash) every dependency setup.cfg declares for it."""
    cfg = _setup_cfg()
    declared: list[str] = []
    for section in sections:
        raw = (
            cfg["options"][section]
            if section == "install_requires"
            else cfg["options.extras_require"][section]
        )
        declared += [line.strip() for line in raw.splitlines() if line.strip()]
    text = (ROOT / lock).read_text()
    pinned = {
        m["name"].lower().replace("_", "-")
        for m in re.finditer(r"^(?P<name>[A-Za-z0-9_.-]+)==\S+ \\\n\s+--hash=sha256:", text, re.M)
    }
    names = {
        re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in declared
    }
    assert names <= pinned


def test_test_lock_agrees_with_the_image_lock() -> None:
    """Each package of requirements.lock has its version in requirements-test.lock: CI tests what ships."""

    def pins(lock: str) -> dict[str, str]:
        text = (ROOT / lock).read_text()
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M))

    image, test = pins("requirements.lock"), pins("requirements-test.lock")
    assert {name: test.get(name) for name in image} == image


def test_lock_input_names_the_build_backend_of_pyproject() -> None:
    """requirements.in lists pyproject.toml's build-system.requires, so the locks pin the build backend."""
    build_requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    listed = {
        re.split(r"[<>=!~ ]", line.strip(), maxsplit=1)[0].lower()
        for line in (ROOT / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {re.split(r"[<>=!~ ]", r, maxsplit=1)[0].lower() for r in build_requires} <= listed
