"""`python -m tests.bench.soakload PLAN.json OUT.json`: one process of the soak's load (issue 17, item 6).

curl and wrk cannot check bodies or mix kinds, so this is a small HTTP/1.1 client on asyncio streams:
`connections` workers, each holding one keep-alive connection of its own (so the connections are
really concurrent, not pooled), send GETs of a kind drawn by weight per request: a manifest (by tag or
digest), a cached blob, or a cold blob (each one requested once, then the kind falls back to cached).
Every body is hashed against its digest. Writes one JSON document to OUT.json: answers by status, failures by
kind, latencies (ms) per request kind once `warmup_s` is over.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUEST_TIMEOUT_S = 60.0  # a request slower than this is a failure, not a latency
RAMP_S = 2.0  # connections open spread over this long: a burst of SYNs would overflow the backlog
KINDS = ("manifest", "cached", "cold")


class WrongAnswer(Exception):
    """The answer was not a 200 with the bytes of the digest asked for."""


@dataclass
class Tally:
    """What one process saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    wrong_bytes: int = 0
    cold_done: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 response with a Content-Length or chunked body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        body = b"".join(parts)
    else:
        raise WrongAnswer(f"status {status} without a length")
    return status, body, headers.get("connection", "").lower() != "close"


class Load:
    """The plan (see `tests/bench/soak.py`) and its tally."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.tally = Tally()
        self.cold: list[list[str]] = list(reversed(plan["cold"]))  # popped from the end, in order
        self.rng = random.Random(plan["seed"])
        self.started = time.monotonic()

    def pick(self) -> tuple[str, str, dict[str, str], str]:
        """(kind, path, headers, digest) of the next request."""
        weights = self.plan["weights"]
        kind = self.rng.choices(KINDS, [weights[k] for k in KINDS])[0]
        if kind == "cold" and self.cold:
            path, digest = self.cold.pop()
            return kind, path, {}, digest
        if kind == "manifest":
            path, accept, digest = self.rng.choice(self.plan["manifests"])
            return kind, path, {"Accept": accept}, digest
        path, digest = self.rng.choice(self.plan["cached"])
        return "cached", path, {}, digest

    async def exchange(self, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
        """One request on the connection; whether it may carry the next."""
        reader, writer = streams
        kind, path, headers, digest = self.pick()
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        started = time.monotonic()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.plan['host']}\r\n{lines}\r\n".encode())
        status, body, keep = await asyncio.wait_for(_answer(reader), REQUEST_TIMEOUT_S)
        elapsed = time.monotonic() - started
        self.tally.statuses[status] += 1
        if status != 200:
            self.tally.failures[f"{kind} answered {status}"] += 1
        elif "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            self.tally.wrong_bytes += 1
        elif started - self.started >= self.plan["warmup_s"]:
            self.tally.latencies[kind].append(elapsed * 1000)
        self.tally.cold_done += kind == "cold"
        return keep

    async def worker(self, number: int, deadline: float) -> None:
        """Hold one connection (a new one after a close or failure) and send requests until `deadline`."""
        await asyncio.sleep(RAMP_S * number / self.plan["connections"])
        while time.monotonic() < deadline:
            try:
                streams = await asyncio.open_connection(self.plan["ip"], self.plan["port"])
            except OSError as exc:
                self.tally.failures[f"connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)  # back off before the next connect, not a wait for state
                continue
            try:
                while time.monotonic() < deadline and await self.exchange(streams):
                    pass
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, WrongAnswer) as exc:
                self.tally.failures[f"request: {type(exc).__name__}"] += 1
            except TimeoutError:
                self.tally.failures["request: timeout"] += 1
            finally:
                streams[1].close()

    async def run(self) -> Tally:
        deadline = self.started + self.plan["warmup_s"] + self.plan["duration_s"]
        await asyncio.gather(*(self.worker(n, deadline) for n in range(self.plan["connections"])))
        return self.tally


def raise_open_files(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard one so `wanted` sockets fit; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def main() -> int:
    plan = json.loads(Path(sys.argv[1]).read_text())
    soft = raise_open_files(plan["connections"] + 64)
    if soft < plan["connections"] + 64:
        print(f"open-file limit {soft} is below {plan['connections']} connections", file=sys.stderr)
        return 2
    tally = asyncio.run(Load(plan).run())
    out = {
        "statuses": {str(k): v for k, v in tally.statuses.items()},
        "failures": dict(tally.failures),
        "wrong_bytes": tally.wrong_bytes,
        "cold_done": tally.cold_done,
        "latencies": tally.latencies,
        "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
    }
    Path(sys.argv[2]).write_text(json.dumps(out))  # a file: a pipe would fill while the parent samples
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
