"""`mirror cache stats|ls|rm|prune|verify`: look into and tidy the blob store of a cache directory.

The store's index is diskcache (SQLite), safe to share between processes, so these commands work next to
a mirror running on the same directory. Exit codes: 0 ok, 1 a check found a problem (verify dropped
corrupt blobs, rm could not remove a blob), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mirror import values
from mirror.commands.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    SubParsers,
    argument_type,
    human_age,
    human_size,
    iso_time,
)
from mirror.config import ConfigError, Settings, load
from mirror.oci import Digest
from mirror.storage.blobs import BlobEntry, BlobStore, StoreStats
from mirror.storage.pins import PinRecord

Action = Callable[[argparse.Namespace, Settings, BlobStore], int]


def target_size(text: str) -> int:
    """A `--to` size: like `cache_max_bytes` (`500M`, `50G`), and 0 allowed (evict every unpinned blob)."""
    return 0 if text.strip() == "0" else values.size(text)


def sort_entries(entries: Iterable[BlobEntry], by: str, limit: int | None) -> list[BlobEntry]:
    """Entries least recently used first (`access`) or largest first (`size`), at most `limit` of them."""
    if by == "size":
        ordered = sorted(entries, key=lambda e: (-e.size, e.accessed_at))
    else:
        ordered = sorted(entries, key=lambda e: e.accessed_at)
    return ordered[:limit] if limit is not None else ordered


def stats_doc(
    settings: Settings, disk_bytes: int, totals: StoreStats, pinned: tuple[int, int], now: float
) -> dict[str, Any]:
    """The `cache stats --json` document from the store's totals and the (count, bytes) of pinned blobs
    stored. The limit bounds the blobs' bytes; `disk_bytes` adds the index."""
    limit = settings.cache_max_bytes
    size, oldest, newest = totals.size, totals.oldest_access, totals.newest_access
    return {
        "cache_dir": str(settings.cache_dir),
        "size_bytes": size,
        "disk_bytes": disk_bytes,
        "limit_bytes": limit,
        "used_percent": round(100 * size / limit, 1),
        "entries": totals.entries,
        "pinned_entries": pinned[0],
        "pinned_bytes": pinned[1],
        "high_watermark_bytes": int(limit * settings.cache_high_watermark),
        "low_watermark_bytes": int(limit * settings.cache_low_watermark),
        "oldest_access": None if oldest is None else iso_time(oldest),
        "oldest_access_age_seconds": None if oldest is None else round(now - oldest, 3),
        "newest_access": None if newest is None else iso_time(newest),
        "newest_access_age_seconds": None if newest is None else round(now - newest, 3),
    }


def render_stats(doc: dict[str, Any], settings: Settings) -> str:
    """`cache stats` for people."""
    high, low = settings.cache_high_watermark, settings.cache_low_watermark
    lines = [
        f"cache dir   {doc['cache_dir']}",
        f"size        {human_size(doc['size_bytes'])} of {human_size(doc['limit_bytes'])}"
        f" ({doc['used_percent']}%), {human_size(doc['disk_bytes'])} on disk with the index",
        f"entries     {doc['entries']} blobs",
        f"pinned      {doc['pinned_entries']} blobs, {human_size(doc['pinned_bytes'])}",
        f"watermarks  evict above {human_size(doc['high_watermark_bytes'])} ({high:.0%})"
        f" down to {human_size(doc['low_watermark_bytes'])} ({low:.0%})",
    ]
    for key in ("oldest", "newest"):
        when, age = doc[f"{key}_access"], doc[f"{key}_access_age_seconds"]
        lines.append(f"{key:<12}{'-' if when is None else f'{when} ({human_age(age)} ago)'}")
    return "\n".join(lines)


def render_entry(entry: BlobEntry, pinned: bool, now: float) -> str:
    """One `cache ls` line: digest, size, last access, pinned mark."""
    line = f"{entry.digest}  {human_size(entry.size):>10}  {human_age(now - entry.accessed_at) + ' ago':>8}"
    return f"{line}  pinned" if pinned else line


def entry_doc(entry: BlobEntry, pinned: bool) -> dict[str, Any]:
    """One blob in `--json` output."""
    return {
        "digest": entry.digest,
        "size": entry.size,
        "stored_at": iso_time(entry.stored_at),
        "accessed_at": iso_time(entry.accessed_at),
        "pinned": pinned,
    }


def pinned_digests(settings: Settings) -> frozenset[str]:
    """Digests the configured pins held at their last warm-up (from `pins.json` in the cache dir)."""
    pins = PinRecord(settings.pins, settings.cache_dir)
    pins.load()
    return pins.digests()


@contextlib.contextmanager
def opened_store(settings: Settings) -> Iterator[BlobStore]:
    """The blob store of `settings.cache_dir`; a directory without one is a configuration error."""
    if not (settings.cache_dir / "blobs").is_dir():
        raise ConfigError(f"no blob store in {settings.cache_dir} (has a mirror run with this cache_dir?)")
    store = BlobStore(settings.cache_dir)
    try:
        yield store
    finally:
        store.close()


def emit(doc: Any) -> None:
    """Print one JSON document."""
    print(json.dumps(doc, indent=2))


def stats(args: argparse.Namespace, settings: Settings, store: BlobStore) -> int:
    """Size against the limit, entries, pins, watermarks, access times."""
    held = store.held(pinned_digests(settings))
    doc = stats_doc(settings, store.usage()[0], store.stats(), held, time.time())
    if args.json:
        emit(doc)
    else:
        print(render_stats(doc, settings))
    return EXIT_OK


def ls(args: argparse.Namespace, settings: Settings, store: BlobStore) -> int:
    """One line (or JSON object) per stored blob."""
    pinned, now = pinned_digests(settings), time.time()
    rows = sort_entries(store.entries(), args.sort, args.limit)
    if args.json:
        emit({"blobs": [entry_doc(e, e.digest in pinned) for e in rows]})
        return EXIT_OK
    for entry in rows:
        print(render_entry(entry, entry.digest in pinned, now))
    return EXIT_OK


def rm(args: argparse.Namespace, settings: Settings, store: BlobStore) -> int:
    """Remove blobs by digest; a pinned one only with --force. 1 if any was not removed."""
    pinned = pinned_digests(settings)
    status = EXIT_OK
    for digest in dict.fromkeys(args.digests):
        size = store.bytes_of({digest})
        if digest in pinned and not args.force:
            print(f"mirror: {digest} is pinned, not removed (--force removes it)", file=sys.stderr)
            status = EXIT_PROBLEM
        elif store.remove(digest):
            print(f"removed {digest} ({human_size(size)})")
        else:
            print(f"mirror: {digest} is not stored", file=sys.stderr)
            status = EXIT_PROBLEM
    return status


def prune(args: argparse.Namespace, settings: Settings, store: BlobStore) -> int:
    """Evict least recently used, unpinned blobs down to the target (or say which would go)."""
    target = args.to if args.to is not None else int(settings.cache_max_bytes * settings.cache_low_watermark)
    before, pinned = store.blob_bytes(), pinned_digests(settings)
    evicted = store.plan_eviction(target, pinned) if args.dry_run else list(store.evict(target, pinned))
    freed = sum(e.size for e in evicted)
    after = before - freed if args.dry_run else store.blob_bytes()
    if args.json:
        emit(
            {
                "dry_run": args.dry_run,
                "target_bytes": target,
                "size_before_bytes": before,
                "size_after_bytes": after,
                "evicted_count": len(evicted),
                "evicted_bytes": freed,
                "evicted": [entry_doc(e, False) for e in evicted],
            }
        )
        return EXIT_OK
    now = time.time()
    for entry in evicted:
        print(render_entry(entry, False, now))
    verb = "would prune" if args.dry_run else "pruned"
    print(
        f"{verb} {len(evicted)} blobs ({human_size(freed)}): {human_size(before)} -> {human_size(after)},"
        f" target {human_size(target)}"
    )
    if after > target:
        print("still above the target: the rest is pinned", file=sys.stderr)
    return EXIT_OK


def verify(args: argparse.Namespace, settings: Settings, store: BlobStore) -> int:
    """Re-hash every blob, dropping corrupt ones; 1 if any was corrupt."""
    total = store.blob_bytes()
    checked = checked_bytes = gone = 0
    corrupt: list[str] = []
    bar_off = args.json or not sys.stderr.isatty()
    with tqdm(
        total=total,
        desc="verify",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=bar_off,
    ) as bar:
        for digest, size, verdict in store.verify_all():
            bar.update(size)
            if verdict is None:
                gone += 1
                continue
            checked, checked_bytes = checked + 1, checked_bytes + size
            if verdict is False:
                corrupt.append(digest)
    if args.json:
        emit({"verified": checked, "verified_bytes": checked_bytes, "corrupt": corrupt, "vanished": gone})
    else:
        for digest in corrupt:
            print(f"corrupt {digest}: dropped")
        print(f"verified {checked} blobs ({human_size(checked_bytes)}): {len(corrupt)} corrupt dropped")
    return EXIT_PROBLEM if corrupt else EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run the `cache` subcommand `args` names; a configuration problem exits 2."""
    action: Action = args.action
    try:
        settings = load({"cache_dir": args.cache_dir}, os.environ, args.config)
        with opened_store(settings) as store:
            return action(args, settings, store)
    except ConfigError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_USAGE


def add_parser(sub: SubParsers) -> None:
    """Add `cache` and its subcommands to the top-level subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE", help="TOML config file (env MIRROR_CONFIG)")
    common.add_argument(
        "--cache-dir", metavar="DIR", help="cache directory (env MIRROR_CACHE_DIR, default ./cache)"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON document")
    cache = sub.add_parser("cache", help="inspect and tidy the blob cache")
    commands = cache.add_subparsers(dest="cache_command", required=True)

    def command(
        name: str, action: Action, text: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        found: argparse.ArgumentParser = commands.add_parser(
            name, help=text, description=text, parents=[common, *parents]
        )
        found.set_defaults(action=action)
        return found

    command("stats", stats, "size against the limit, entries, pins, access times", as_json)
    listing = command("ls", ls, "one line per stored blob", as_json)
    listing.add_argument("--sort", choices=("access", "size"), default="access", help="default: access")
    listing.add_argument(
        "--limit", type=argument_type(values.positive_count), metavar="N", help="at most N lines"
    )
    removal = command("rm", rm, "remove blobs by digest")
    removal.add_argument("digests", nargs="+", metavar="DIGEST", type=argument_type(_digest))
    removal.add_argument("--force", action="store_true", help="also remove pinned blobs")
    pruning = command("prune", prune, "evict least recently used, unpinned blobs", as_json)
    pruning.add_argument(
        "--to", type=argument_type(target_size), metavar="SIZE", help="default: the low watermark"
    )
    pruning.add_argument("--dry-run", action="store_true", help="only say what would be evicted")
    command("verify", verify, "re-hash every blob, drop corrupt ones", as_json)


def _digest(text: str) -> str:
    return str(Digest.parse(text))
