"""Which build is running: the package version and the git revision it was built from, for
`mirror --version`, the `mirror_build_info` metric and the start-up log line."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from mirror import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
#: Written by image builds (their context has no .git): one line, the revision.
REVISION_FILE = PACKAGE_DIR / "REVISION"
#: git answers in milliseconds; this only bounds a hung one (a stale lock on a network filesystem).
GIT_TIMEOUT_SECONDS = 5
UNKNOWN = "unknown"


@functools.cache
def revision() -> str:
    """The git revision of this build (12 hex digits, `-dirty` when built from modified files), read
    from REVISION_FILE, else from the git checkout the package runs from; `unknown` when neither."""
    try:
        recorded = REVISION_FILE.read_text(encoding="utf-8").strip()
    except OSError:
        recorded = ""
    return recorded or _from_git(PACKAGE_DIR.parent) or UNKNOWN


def describe() -> str:
    """`mirror 0.1.0 (git 0123456789ab)`: what `mirror --version` prints."""
    return f"mirror {__version__} (git {revision()})"


def _from_git(checkout: Path) -> str | None:
    """The checkout's HEAD, only when the package's parent directory is itself the work tree's top (so
    an installed copy inside some other repository never reports that repository's revision)."""
    if not (checkout / ".git").exists():
        return None
    try:
        top = _git(checkout, "rev-parse", "--show-toplevel")
        if Path(top).resolve() != checkout:
            return None
        return _git(checkout, "describe", "--always", "--dirty", "--abbrev=12", "--exclude=*")
    except (OSError, subprocess.SubprocessError):
        return None


def _git(checkout: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_SECONDS,
        check=True,
    )
    return done.stdout.strip()
