"""Command line: argv → Settings → logging → run. Exit codes: 0 ok, 1 a check or warm-up found a problem,
2 bad usage or configuration."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from mirror import build, cachetool, log, warm
from mirror.app import create_app
from mirror.config import ConfigError, Settings, load

EXIT_OK, EXIT_USAGE = 0, 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mirror", description="Pull-through caching registry mirror.")
    top.add_argument(
        "--version", action=_Version, nargs=0, help="show the version and git revision, then exit"
    )
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the mirror")
    serve.add_argument("--config", type=Path, help="TOML config file (env MIRROR_CONFIG)")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 0.0.0.0:5000)")
    serve.add_argument("--cache-dir", help="cache directory (default ./cache)")
    serve.add_argument("--upstream", help="upstream registry URL, standing for docker.io")
    serve.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    cachetool.add_parser(sub)
    warm.add_parser(sub)
    return top


class _Version(argparse.Action):
    """`--version`, reading the git revision only when asked (argparse's own action formats eagerly)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(build.describe())
        parser.exit()


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    flags = {"listen": args.listen, "cache_dir": args.cache_dir, "upstream": args.upstream}
    return load(flags, environ, args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "cache":
        return cachetool.run(args)
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
    web.run_app(
        create_app(settings),
        host=settings.listen.host,
        port=settings.listen.port,
        access_log=None,
        print=None,
        shutdown_timeout=settings.shutdown_grace,
    )
    return EXIT_OK
