"""`mirror doctor`: will this node's pulls go through the mirror? Read every runtime's configuration, say
per registry where pulls go first, and prove it by pulling a manifest through the mirror the way that
runtime asks for it.

Runtimes are checked when their file exists (or is named by a flag): containerd (config.toml and the
hosts.toml files under its `config_path`), Docker (daemon.json, certs.d), podman/CRI-O/skopeo
(registries.conf and registries.conf.d), k3s and RKE2 (registries.yaml). `--root DIR` reads a node's
files under DIR, paths named inside them included.
Exit codes: 0 every checked registry goes through the mirror, 1 a problem was found, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mirror import oci, values
from mirror.commands.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, SubParsers, argument_type
from mirror.commands.doctor import checks, containerd, docker, k3s, podman, report
from mirror.commands.doctor.model import DEFAULT_FILES, Paths, RuntimeConfig
from mirror.commands.node_config import served_registries
from mirror.config import ConfigError

RUNTIMES = ("containerd", "docker", "podman", "k3s", "rke2")
DEFAULT_IMAGE = "docker.io/library/alpine:latest"  # a small, always-present image to prove docker.io with
_RUNTIME_FILE = {
    "containerd": "containerd_config",
    "docker": "docker_daemon_json",
    "podman": "registries_conf",
    "k3s": "k3s_registries",
    "rke2": "rke2_registries",
}


def paths_from(args: argparse.Namespace) -> Paths:
    """Each file from its flag, else its default under --root."""
    explicit = frozenset(r for r, key in _RUNTIME_FILE.items() if getattr(args, key) is not None)
    return Paths.under(args.root, explicit, **{key: getattr(args, key) for key in DEFAULT_FILES})


def _present(runtime: str, paths: Paths) -> bool:
    file: Path = getattr(paths, _RUNTIME_FILE[runtime])
    if runtime == "podman":
        return file.is_file() or paths.registries_conf_d.is_dir()
    return file.is_file()


def read_runtime(
    runtime: str, paths: Paths, registries: list[str], images: dict[str, oci.ImageRef], fix_url: str
) -> RuntimeConfig:
    """One runtime's routes for `registries`."""
    if runtime == "containerd":
        return containerd.read(paths.containerd_config, registries, paths, fix_url)
    if runtime == "docker":
        return docker.read(paths.docker_daemon_json, paths.docker_certs_dir, registries, fix_url)
    if runtime == "podman":
        names = [(r, f"{r}/{images[r].name}" if r in images else r) for r in registries]
        return podman.read(paths.registries_conf, paths.registries_conf_d, names, fix_url)
    file = paths.k3s_registries if runtime == "k3s" else paths.rke2_registries
    return k3s.read(runtime, file, registries, paths, fix_url)


def _images(args: argparse.Namespace) -> dict[str, oci.ImageRef]:
    images: dict[str, oci.ImageRef] = {}
    for ref in [*(args.image or []), oci.parse_image_ref(DEFAULT_IMAGE)]:
        images.setdefault(ref.registry, ref)
    return images


def run(args: argparse.Namespace) -> int:
    """`mirror doctor`: a report on stdout (text or --json); 1 if any problem was found."""
    try:
        registries = list(args.registries or served_registries(args.config, dict(os.environ)))
    except ConfigError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_USAGE
    images = _images(args)
    registries += [i.registry for i in args.image or [] if i.registry not in registries]
    paths = paths_from(args)
    fix_url = args.mirror or "http://MIRROR:5000"
    configs, missing = [], []
    for runtime in args.runtime or RUNTIMES:
        if _present(runtime, paths):
            configs.append(read_runtime(runtime, paths, registries, images, fix_url))
        else:
            asked = runtime in paths.explicit or bool(args.runtime)
            missing.append((runtime, str(getattr(paths, _RUNTIME_FILE[runtime])), asked))
    results = checks.evaluate(
        configs, args.mirror, images, run_probes=not args.no_probe, timeout=args.timeout
    )
    doc = report.document(results, missing, args.mirror)
    print(report.as_json(doc) if args.json else report.as_text(doc))
    return EXIT_OK if doc["ok"] else EXIT_PROBLEM


def add_parser(sub: SubParsers) -> None:
    """Add `doctor` to the top-level subparsers."""
    text = "check that this node's container runtimes pull through the mirror, and prove it"
    doctor = sub.add_parser("doctor", help=text, description=text)
    doctor.add_argument(
        "registries",
        nargs="*",
        type=argument_type(values.registry_host),
        metavar="REGISTRY",
        help="registries to check (default: every registry in the mirror's config)",
    )
    doctor.add_argument(
        "--mirror",
        type=argument_type(values.http_url),
        metavar="URL",
        help="the mirror the runtimes should use (default: whatever mirror they are configured with)",
    )
    doctor.add_argument(
        "--image",
        action="append",
        type=argument_type(oci.parse_image_ref),
        metavar="REF",
        help=f"an image whose manifest proves its registry (repeatable; default {DEFAULT_IMAGE})",
    )
    doctor.add_argument(
        "--runtime", action="append", choices=RUNTIMES, help="check only this runtime (repeatable)"
    )
    doctor.add_argument("--no-probe", action="store_true", help="read the configuration only, pull nothing")
    doctor.add_argument(
        "--timeout",
        type=argument_type(values.positive_seconds),
        default=10.0,
        metavar="SECONDS",
        help="per probe request (default 10)",
    )
    doctor.add_argument("--json", action="store_true", help="one JSON document instead of text")
    doctor.add_argument(
        "--config", type=Path, metavar="FILE", help="the mirror's TOML config (env MIRROR_CONFIG)"
    )
    doctor.add_argument(
        "--root", type=Path, default=Path("/"), metavar="DIR", help="read the node's files under DIR"
    )
    for key, default in DEFAULT_FILES.items():
        doctor.add_argument(
            f"--{key.replace('_', '-')}", type=Path, metavar="PATH", help=f"default /{default}"
        )
