"""Command line: argv → Settings → logging → run. Exit codes: 0 ok, 1 a check or warm-up found a problem,
2 bad usage or configuration."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mirror import __version__, log
from mirror.commands import cache, warm
from mirror.commands.common import EXIT_OK, EXIT_USAGE
from mirror.config import ConfigError, Settings, load


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mirror", description="Pull-through caching registry mirror.")
    top.add_argument("--version", action="version", version=f"mirror {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the mirror")
    serve.add_argument("--config", type=Path, help="TOML config file (env MIRROR_CONFIG)")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 0.0.0.0:5000)")
    serve.add_argument("--cache-dir", help="cache directory (default ./cache)")
    serve.add_argument("--upstream", help="upstream registry URL, standing for docker.io")
    serve.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    cache.add_parser(sub)
    warm.add_parser(sub)
    return top


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    flags = {"listen": args.listen, "cache_dir": args.cache_dir, "upstream": args.upstream}
    return load(flags, environ, args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "cache":
        return cache.run(args)
    if args.command == "warm":
        return warm.run(args)
    try:
        settings = settings_from(args, dict(os.environ))
    except ConfigError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        print(json.dumps(settings.redacted(), indent=2))
        return EXIT_OK
    log.configure(settings.log_format, settings.log_level)
    serve(settings)
    return EXIT_OK


def serve(settings: Settings) -> None:
    """Run the mirror until SIGINT/SIGTERM."""
    # Imported here, not at the top: the operator commands must not load the server (see mirror.commands).
    from mirror import server
    from mirror.app import create_app

    server.serve(create_app(settings))
