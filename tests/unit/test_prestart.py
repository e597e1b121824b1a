"""Transfer threads started with the transport: as many as asked, never more than `max_transfers`."""

from __future__ import annotations

import asyncio

from mirror.upstream.threaded import ThreadedTransport


async def test_prestart_starts_the_threads_asked_for() -> None:
    """`prestart(3)` leaves three transfer threads running, before any request."""
    transport = ThreadedTransport(connect_timeout=5, read_timeout=5)
    try:
        await asyncio.to_thread(transport.prestart, 3)
        assert len(transport.executor._threads) == 3
    finally:
        await transport.close()


async def test_prestart_never_starts_more_than_max_transfers() -> None:
    """With `max_transfers` 2, asking for eight starts two (eight waiting on each other would hang)."""
    transport = ThreadedTransport(connect_timeout=5, read_timeout=5, max_transfers=2)
    try:
        await asyncio.wait_for(asyncio.to_thread(transport.prestart, 8), 10)
        assert len(transport.executor._threads) == 2
    finally:
        await transport.close()
