"""Command line: argv → Settings → logging → run. Exit codes: 0 ok, 1 a check or warm-up found a problem,
2 bad usage or configuration."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirror import build, log
from mirror.commands import cache, doctor, node_config, warm
from mirror.commands.common import EXIT_OK, EXIT_USAGE
from mirror.config import ConfigError, Listen, Settings, load


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
    serve.add_argument("--tls-cert", help="PEM certificate (chain) to serve HTTPS with (env MIRROR_TLS_CERT)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert (env MIRROR_TLS_KEY)")
    serve.add_argument(
        "--tls-client-ca", help="PEM CA bundle client certificates must chain to (env MIRROR_TLS_CLIENT_CA)"
    )
    serve.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    cache.add_parser(sub)
    warm.add_parser(sub)
    node_config.add_parser(sub)
    doctor.add_parser(sub)
    return top


class _Version(argparse.Action):
    """`--version`, reading the git revision only when asked (argparse's own action formats eagerly)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(build.describe())
        parser.exit()


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    flags = {
        "listen": args.listen,
        "cache_dir": args.cache_dir,
        "upstream": args.upstream,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca,
    }
    return load(flags, environ, args.config)


def listen_on(listen: Listen) -> dict[str, Any]:
    """`run_app` arguments for `listen`. `::` means every address, IPv4 included (a dual-stack socket,
    as `[::]:80` means to nginx with `ipv6only=off`): asyncio would make it IPv6-only."""
    if listen.host != "::":
        return {"host": listen.host, "port": listen.port}
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", listen.port))
    return {"sock": sock}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "cache":
        return cache.run(args)
    if args.command == "warm":
        return warm.run(args)
    if args.command == "node-config":
        return node_config.run(args)
    if args.command == "doctor":
        return doctor.run(args)
    try:
        settings = settings_from(args, dict(os.environ))
    except ConfigError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        print(json.dumps(settings.redacted(), indent=2))
        return EXIT_OK
    log.configure(settings.log_format, settings.log_level)
    try:
        serve(settings)
    except ConfigError as exc:  # a TLS or credentials file that cannot be used
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def serve(settings: Settings) -> None:
    """Run the mirror until SIGINT/SIGTERM."""
    # Imported here, not at the top: the operator commands must not load the server (see mirror.commands).
    from mirror import server
    from mirror.app import serving

    app, tls = serving(settings)  # before the loop runs: reading the TLS files blocks
    server.serve(app, tls, listen_on(settings.listen))
