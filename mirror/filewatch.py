"""Files the mirror re-reads when they change on disk: TLS certificates, htpasswd, token files.

Kubernetes and cert-manager renew a mounted Secret by moving new files over the old paths (an atomic
swap of a symlinked directory), so a change shows as a new inode, size or mtime of the path, which a
poll of `os.stat` every `reload_interval` seconds (default 2; a poll costs microseconds) sees, where
inotify on the old inode would not. Stat calls run in a thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger("mirror.filewatch")

Signature = tuple[tuple[int, int, int, int] | None, ...]


def signature(paths: Sequence[Path]) -> Signature:
    """What identifies the current content of each path (device, inode, size, mtime); None if missing."""
    found: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            found.append(None)
        else:
            found.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


async def watch(
    paths: Sequence[Path],
    reload: Callable[[], Awaitable[None]],
    since: Signature,
    interval: float,
) -> None:
    """Call `reload()` each time the files' signature differs from the last one seen (from `since`).

    Runs until cancelled; `reload` handles its own errors (a broken file keeps the old content), and the
    signature of a failed reload is remembered too, so a broken file is retried when it changes again.
    """
    last = since
    while True:
        await asyncio.sleep(interval)
        now = await asyncio.to_thread(signature, paths)
        if now != last:
            last = now
            await reload()
