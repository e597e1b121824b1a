"""`mirror node-config`: point this node's containerd at the node-local mirror, or take that back.

It writes `<certs-dir>/<registry>/hosts.toml` for every registry the mirror serves (and `_default` when
asked), each sending pulls and tag resolution to the mirror first and keeping the registry itself as the
fallback. containerd reads these files at every pull when its `config_path` names the directory: no
restart. Every file written starts with `hosts_toml.OWNER_MARKER`; a file without it is an operator's
and is never changed or removed. Running it again converges: changed files are rewritten atomically,
its own files for registries no longer served are removed. `--remove` deletes all of its files;
`--until-stopped` writes them, waits for SIGTERM and then removes them (the chart's and kustomize's
sidecar: the node points at the mirror exactly while the mirror's pod is there).
Exit codes: 0 done, 1 a file could not be written or removed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mirror import values
from mirror.commands import hosts_toml
from mirror.commands.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, SubParsers, argument_type
from mirror.config import ConfigError, load

DEFAULT_CERTS_DIR = Path("/etc/containerd/certs.d")  # containerd's documented config_path
HOSTS_FILE = "hosts.toml"


@dataclass(frozen=True)
class Action:
    """What happened to one file: written, unchanged, removed, kept (an operator's), failed."""

    verb: str
    path: Path
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.verb:<9} {self.path}" + (f"  ({self.detail})" if self.detail else "")


def served_registries(config: Path | None, environ: dict[str, str]) -> tuple[str, ...]:
    """The registries the mirror serves to containerd: docker.io and each [[upstreams]] registry. Aliases
    are path prefixes only (the mirror routes `?ns=` by registry name), and Docker Hub's other names are
    docker.io to containerd already."""
    return tuple(upstream.registry for upstream in load({}, environ, config).registries())


@dataclass(frozen=True)
class MirrorAccess:
    """How containerd reaches the mirror: its URL and the TLS and credential settings it needs."""

    url: str
    ca: str | None = None
    skip_verify: bool = False
    client: tuple[str, str] | None = None  # paths on the node
    authorization: str | None = field(default=None, repr=False)  # an Authorization header value


def desired_files(registries: Iterable[str], access: MirrorAccess, *, default: bool) -> dict[str, str]:
    """Host directory name → the hosts.toml text to put there."""
    names = [*registries, *([hosts_toml.DEFAULT_DIR] if default else [])]
    return {
        n: hosts_toml.render(
            n,
            access.url,
            ca=access.ca,
            skip_verify=access.skip_verify,
            client=access.client,
            authorization=access.authorization,
        )
        for n in names
    }


def _owned(path: Path) -> bool:
    """Whether `path` starts with the marker; a file that cannot be read is not ours (never removed)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.readline().rstrip("\n") == hosts_toml.OWNER_MARKER
    except OSError:
        return False


def _write_atomically(path: Path, text: str, mode: int) -> None:
    """Replace `path` by `text` in one rename: containerd, reading at every pull, never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hosts.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove(path: Path) -> Action:
    path.unlink()
    with contextlib.suppress(OSError):  # the directory stays if anything else (a CA file, say) is in it
        path.parent.rmdir()
    return Action("removed", path)


def _own_files(certs_dir: Path) -> list[Path]:
    if not certs_dir.is_dir():
        return []
    return sorted(p for p in certs_dir.glob(f"*/{HOSTS_FILE}") if _owned(p))


def apply(certs_dir: Path, files: dict[str, str], *, secret: bool = False) -> list[Action]:
    """Make `certs_dir` hold exactly `files` among the hosts.toml files this command owns; with `secret`
    (they carry credentials) readable by their owner only."""
    actions: list[Action] = []
    for name, text in files.items():
        path = certs_dir / name / HOSTS_FILE
        try:
            if path.exists() and not _owned(path):
                actions.append(Action("kept", path, "not written by mirror node-config: left as it is"))
            elif path.exists() and path.read_text(encoding="utf-8") == text:
                actions.append(Action("unchanged", path))
            else:
                _write_atomically(path, text, 0o600 if secret else 0o644)
                actions.append(Action("written", path))
        except OSError as exc:
            actions.append(Action("failed", path, str(exc)))
    stale = [p for p in _own_files(certs_dir) if p.parent.name not in files]
    return actions + remove(stale)


def remove(paths: Sequence[Path]) -> list[Action]:
    """Delete these files (the caller checked they are ours) and their directories when left empty."""
    actions = []
    for path in paths:
        try:
            actions.append(_remove(path))
        except OSError as exc:
            actions.append(Action("failed", path, str(exc)))
    return actions


def _report(actions: Sequence[Action], certs_dir: Path) -> bool:
    """Print one line per file; whether none failed."""
    for action in actions:
        print(action, flush=True)
    if not actions:
        print(f"nothing to do in {certs_dir}", flush=True)
    return not any(a.verb == "failed" for a in actions)


_STOPS = {signal.SIGTERM, signal.SIGINT}


def _hold_stops() -> None:
    """Keep SIGTERM/SIGINT pending from now on, for `sigwait`: one sent while the files are being
    written is not lost, and it works as PID 1 of a container (which drops signals it has no handler for
    unless they are blocked)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)


def _access(args: argparse.Namespace) -> MirrorAccess:
    """The mirror's URL with --ca, --skip-verify, --client-cert/--client-key and --authorization-file."""
    if (args.client_cert is None) != (args.client_key is None):
        raise ValueError("--client-cert and --client-key go together")
    authorization = None
    if args.authorization_file is not None:
        authorization = Path(args.authorization_file).read_text(encoding="utf-8").strip()
        if not authorization or "\n" in authorization or '"' in authorization:
            raise ValueError(f"{args.authorization_file}: expected one header value, e.g. Basic <base64>")
    client = (args.client_cert, args.client_key) if args.client_cert else None
    return MirrorAccess(args.mirror, args.ca, args.skip_verify, client, authorization)


def run(args: argparse.Namespace) -> int:
    """`mirror node-config`: one line per file on stdout; 1 if any file failed."""
    certs_dir: Path = args.certs_dir
    if args.remove:
        return EXIT_OK if _report(remove(_own_files(certs_dir)), certs_dir) else EXIT_PROBLEM
    if args.mirror is None:
        print("mirror node-config: --mirror is required (unless --remove)", file=sys.stderr)
        return EXIT_USAGE
    try:
        registries = args.registries or served_registries(args.config, dict(os.environ))
    except ConfigError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        access = _access(args)
    except (OSError, ValueError) as exc:
        print(f"mirror node-config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    files = desired_files(registries, access, default=args.default)
    if args.until_stopped:
        _hold_stops()
    written = _report(apply(certs_dir, files, secret=access.authorization is not None), certs_dir)
    if args.until_stopped:
        signal.sigwait(_STOPS)
        written = _report(remove(_own_files(certs_dir)), certs_dir) and written
    return EXIT_OK if written else EXIT_PROBLEM


def add_parser(sub: SubParsers) -> None:
    """Add `node-config` to the top-level subparsers."""
    text = "write (or --remove) this node's containerd hosts.toml files pointing at the node-local mirror"
    node = sub.add_parser("node-config", help=text, description=text)
    node.add_argument(
        "registries",
        nargs="*",
        type=argument_type(values.registry_host),
        metavar="REGISTRY",
        help="registries to send through the mirror (default: every registry in the config)",
    )
    node.add_argument(
        "--mirror",
        type=argument_type(values.http_url),
        metavar="URL",
        help="the mirror as containerd on this node reaches it, e.g. http://127.0.0.1:5000",
    )
    node.add_argument(
        "--certs-dir",
        type=Path,
        default=DEFAULT_CERTS_DIR,
        metavar="DIR",
        help=f"containerd's config_path directory (default {DEFAULT_CERTS_DIR})",
    )
    node.add_argument(
        "--default",
        action="store_true",
        help="also write _default/hosts.toml: every other registry tries the mirror first too",
    )
    node.add_argument("--ca", metavar="PATH", help="CA file (path on the node) for an https mirror")
    node.add_argument("--skip-verify", action="store_true", help="do not verify the mirror's certificate")
    node.add_argument("--client-cert", metavar="PATH", help="client certificate (path on the node), for mTLS")
    node.add_argument("--client-key", metavar="PATH", help="its key (path on the node)")
    node.add_argument(
        "--authorization-file",
        metavar="FILE",
        help="a file holding the Authorization header value for the mirror (Basic ... or Bearer ...); "
        "the hosts.toml files then get mode 0600",
    )
    node.add_argument("--remove", action="store_true", help="delete every file this command wrote, and exit")
    node.add_argument(
        "--until-stopped",
        action="store_true",
        help="after writing, wait for SIGTERM/SIGINT, then remove the files (a Kubernetes sidecar)",
    )
    node.add_argument("--config", type=Path, metavar="FILE", help="TOML config file (env MIRROR_CONFIG)")
