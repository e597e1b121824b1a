"""Resuming an upstream blob body: the one rule for a download whose body breaks off mid-way.

A fill's main stream and a pass-through receive a blob from upstream the same way: open a body from
an offset, drop what an upstream that ignored the Range sends before it (`transport.skip_for`),
receive the rest; and when the body breaks off (`BodyBroken`) or ends short, wait and open it again
from where it got to, at most MAX_RESUMES times in one download, the pause doubling each time. What
differs, where the next body starts and ends and where its bytes go, is the caller's `Resumable`;
how a resume is told (log event, counter) and the error past the limit are the caller's too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter
from structlog.typing import FilteringBoundLogger

from mirror.upstream.transport import BlobBody, BodyBroken, skip_for

#: Resumes of one download before it fails: enough to ride out a few dropped connections, few enough
#: that an upstream which keeps cutting the body off is given up (a drip after 6 `fill_min_window`s).
MAX_RESUMES = 5
#: Seconds before the first resume, doubled for each one after: 0.2 + 0.4 + ... + 3.2 = 6.2 s in all.
RESUME_BACKOFF = 0.2


class Resumable(Protocol):
    """One download of a blob body, as the resume loop drives it."""

    @property
    def offset(self) -> int:
        """Where the next body starts: every byte before it is received."""

    async def next_body(self) -> BlobBody | None:
        """The body from `offset` on, its headers read; None when nothing is left to receive."""

    async def receive(self, body: BlobBody, skip: int) -> bool:
        """Receive `body` after dropping its first `skip` bytes; whether it brought all it was asked
        for (False: it ended early). Raises BodyBroken when it breaks off."""


async def receive_resuming(
    download: Resumable,
    *,
    log: FilteringBoundLogger,
    event: str,
    digest: str,
    resumes: Counter,
    give_up: Callable[[str], Exception],
) -> None:
    """Receive `download` body after body until it has none left, resuming one that broke off or
    ended early: each resume is logged as `event` and counted in `resumes`; past MAX_RESUMES the
    error `give_up` makes of the last problem is raised. Every body is released."""
    count = 0
    while (body := await download.next_body()) is not None:
        try:
            try:
                complete = await download.receive(body, skip_for(body, download.offset))
            finally:
                body.release()
        except BodyBroken as exc:
            problem = str(exc)
        else:
            if complete:
                continue
            problem = "upstream body ended early"
        count += 1
        if count > MAX_RESUMES:
            raise give_up(f"blob download failed: {problem}")
        log.info(event, digest=digest, offset=download.offset, detail=problem)
        resumes.inc()
        await asyncio.sleep(RESUME_BACKOFF * 2 ** (count - 1))
