"""The parts of a bench run: one upstream, nginx, a warm mirror and a warm reference for the cached
scenarios, and fresh (cold) mirrors and references on demand, each stopped by PID when done."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.load import fetch_verified
from tests.bench.procs import Nginx, ProcStats, ProxyRegistry
from tests.bench.seed import Seeded, blob_path
from tests.bench.wan import Shape, Shaper
from tests.support.mirrorproc import MirrorProcess
from tests.support.polling import wait_until
from tests.support.registry import Registry

MIB = 1024 * 1024
WHO = ("mirror", "reference", "limit")
SETTLE_S = 180.0
WARM_TAG_TTL_S = 3600
QUIET_S = 0.3
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b")
Sample = dict[str, float]


@dataclass
class Target:
    """One server under test in one scenario run."""

    url: str
    settle: Callable[[Sequence[str]], None]  # wait until background fetches of these digests are over
    stats: ProcStats | None = None  # the mirror's process tree, to measure
    log: Path | None = None  # the mirror's JSON log

    def fill_seconds(self, digest: str) -> float | None:
        """How long the mirror's upstream download of `digest` took, from its `blob_fill_committed` line."""
        if self.log is None or not self.log.is_file():
            return None
        for line in self.log.read_text(errors="replace").splitlines():
            if '"blob_fill_committed"' in line and digest in line:
                return float(json.loads(line)["seconds"])
        return None

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def blob_url(self, name: str, digest: str) -> str:
        return f"{self.url}/v2/{name}/blobs/{digest}"

    @contextlib.contextmanager
    def measure(self, sample: Sample) -> Iterator[None]:
        """Record the mirror's CPU seconds and peak RSS over the block (nothing for other targets)."""
        if self.stats is None:
            yield
            return
        self.stats.reset_peak()
        cpu = self.stats.cpu_seconds()
        yield
        sample["mirror_cpu_s"] = sample.get("mirror_cpu_s", 0.0) + self.stats.cpu_seconds() - cpu
        peak = self.stats.peak_rss() / MIB
        sample["mirror_peak_rss_mib"] = max(peak, sample.get("mirror_peak_rss_mib", 0.0))


def _no_settle(digests: Sequence[str]) -> None:
    """Nothing runs in the background of a plain registry or nginx."""


def settle_mirror(mirror: MirrorProcess) -> Callable[[Sequence[str]], None]:
    def settle(digests: Sequence[str]) -> None:
        wait_until(lambda: mirror.metric("mirror_fills_in_flight") == 0, SETTLE_S, "mirror fills done")

    return settle


def settle_reference(reference: ProxyRegistry) -> Callable[[Sequence[str]], None]:
    def settle(digests: Sequence[str]) -> None:
        wait_until(
            lambda: all(reference.has_blob(d) for d in digests), SETTLE_S, "reference stored the blobs"
        )

    return settle


@dataclass(frozen=True)
class SoakSettings:
    """The soak's shape (scenario 10): connections in all, load processes, seconds of warm-up and of soak."""

    connections: int = 1000
    processes: int = 2  # one event loop cannot drive 1,000 hashing connections alone on this machine
    warmup_s: float = 10.0
    duration_s: float = 60.0


@dataclass
class Env:
    """Everything a scenario needs; `notes` collects what looked odd, for the report."""

    workdir: Path
    seeded: Seeded
    storage: Path
    upstream: Registry
    nginx: Nginx
    mirror: MirrorProcess
    reference: ProxyRegistry
    duration_s: float
    herd: int
    wan: Shaper  # the WAN-shaped link in front of `upstream`
    logs_dir: Path | None = None  # where logs with warnings or errors are copied for the report
    soak: SoakSettings = field(default_factory=SoakSettings)
    bigstore_blobs: int = 100_000  # blobs in scenario 11's store
    mirror_logs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def warm(self, who: str, limit: str | None = None) -> Target:
        """The long-lived (cached) mirror or reference, or the limit (`limit` URL, default the upstream)."""
        if who == "mirror":
            assert self.mirror.proc is not None
            return Target(self.mirror.url, settle_mirror(self.mirror), ProcStats(self.mirror.proc.pid))
        if who == "reference":
            return Target(self.reference.url, settle_reference(self.reference))
        return Target(limit or self.upstream.url, _no_settle)

    @contextlib.contextmanager
    def cold(self, who: str, label: str, upstream: str | None = None) -> Iterator[Target]:
        """A fresh mirror or reference (empty cache), or the upstream itself for the limit; `upstream`
        is the URL all three reach it by (default the upstream's own, on loopback)."""
        upstream = upstream or self.upstream.url
        if who == "mirror":
            with self.fresh_mirror(label, upstream) as mirror:
                assert mirror.proc is not None
                yield Target(mirror.url, settle_mirror(mirror), ProcStats(mirror.proc.pid), mirror.log_path)
        elif who == "reference":
            with self.fresh_reference(label, upstream) as reference:
                yield Target(reference.url, settle_reference(reference))
        else:
            yield Target(upstream, _no_settle)

    @contextlib.contextmanager
    def fresh_mirror(
        self, label: str, upstream: str | None = None, env: dict[str, str] | None = None
    ) -> Iterator[MirrorProcess]:
        workdir = self.workdir / f"mirror-{label}"
        mirror = MirrorProcess(workdir, upstream or self.upstream.url, env)
        failed = True
        try:
            mirror.start()
            yield mirror
            if mirror.proc is not None and mirror.proc.poll() is not None:
                self.notes.append(f"mirror {label} exited with {mirror.proc.returncode} during the run")
            failed = False
        finally:
            mirror.stop()
            self.audit(mirror.log_path, label, keep=failed)
            shutil.rmtree(workdir / "cache", ignore_errors=True)

    @contextlib.contextmanager
    def fresh_reference(self, label: str, upstream: str | None = None) -> Iterator[ProxyRegistry]:
        workdir = self.workdir / f"reference-{label}"
        reference = ProxyRegistry(workdir, upstream or self.upstream.url)
        try:
            reference.start()
            yield reference
        finally:
            reference.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    def upstream_mark(self) -> int:
        """`upstream.mark()` once the upstream's access log has been still for `QUIET_S`: requests a
        previous target left in flight (distribution keeps working on requests wrk gave up on) must not
        land in the next target's window."""
        log, deadline = self.upstream.access_log, time.monotonic() + SETTLE_S
        size, since = -1, time.monotonic()
        while time.monotonic() - since < QUIET_S:
            now = log.stat().st_size if log.exists() else 0
            if now != size:
                size, since = now, time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{log} still growing after {SETTLE_S} s")
            time.sleep(0.02)  # polling the log file's size, not a wait for a fixed delay
        return self.upstream.mark()

    def upstream_window(self, mark: int) -> tuple[int, int]:
        """(requests, body bytes of GETs answered 200/206) the upstream logged since `mark`."""
        seen = self.upstream.requests(mark)
        got = sum(r.size or 0 for r in seen if r.method == "GET" and r.status in (200, 206))
        return len(seen), got

    def audit(self, log_path: Path, label: str, *, keep: bool = False) -> None:
        """Note warnings, errors and tracebacks (by their exception line) in a mirror's log."""
        if not log_path.is_file():
            return
        self.mirror_logs.append(log_path)
        found: Counter[str] = Counter()
        for line in log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                if _EXCEPTION_LINE.match(line):
                    found[f"traceback ending in {line[:200]}"] += 1
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            level = str(entry.get("level", "")) if isinstance(entry, dict) else ""
            if level in ("warning", "error", "critical", "exception"):
                found[f"{level}: {entry.get('event')} {_detail(entry)}"] += 1
        for text, count in found.most_common(5):
            self.notes.append(f"mirror {label} log: {count} x {text}")
        if (found or keep) and self.logs_dir is not None:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            kept = self.logs_dir / f"mirror-{label}.log"
            shutil.copyfile(log_path, kept)
            self.notes.append(f"mirror {label} log kept: {kept}")


def _detail(entry: dict[str, object]) -> str:
    """What a log entry says went wrong: its detail, or the last line of its traceback."""
    exception = str(entry.get("exception") or "").strip().splitlines()
    text = str(entry.get("detail") or "") or (exception[-1] if exception else "")
    return text[:200]


def start_env(
    stack: contextlib.ExitStack,
    workdir: Path,
    seeded: Seeded,
    storage: Path,
    *,
    duration_s: float,
    herd: int,
    wan: Shape,
    logs_dir: Path | None = None,
) -> Env:
    """Start the upstream (over the seeded storage), the WAN link in front of it, nginx, and the warm
    mirror and reference, and fill both caches with the big blob (digest checked), the small blob and
    the tagged manifest."""
    upstream = Registry(workdir / "upstream")
    upstream.root = storage  # read-only use of the cached seed: GETs write nothing
    stack.callback(upstream.stop)
    upstream.start()
    shaper = Shaper(upstream.port, wan)
    stack.callback(shaper.stop)
    shaper.start()
    nginx = Nginx(workdir / "nginx", {"big": blob_path(storage, seeded.big_digest)})
    stack.callback(nginx.stop)
    nginx.start()
    reference = ProxyRegistry(workdir / "reference-warm", upstream.url)
    stack.callback(reference.stop)
    reference.start()
    # Tag TTL beyond the bench's length: the manifest scenario measures hits "within the TTL" (issue 8).
    mirror = MirrorProcess(workdir / "mirror-warm", upstream.url, env={"MIRROR_TAG_TTL": str(WARM_TAG_TTL_S)})
    env = Env(
        workdir, seeded, storage, upstream, nginx, mirror, reference, duration_s, herd, shaper, logs_dir
    )
    stack.callback(env.audit, mirror.log_path, "warm")
    stack.callback(mirror.stop)
    mirror.start()
    for who in ("mirror", "reference"):
        target = env.warm(who)
        fetch_verified(
            target.blob_url(seeded.big_name, seeded.big_digest), seeded.big_digest, seeded.big_size
        )
        fetch_verified(
            target.blob_url(seeded.small_name, seeded.small_digest), seeded.small_digest, seeded.small_size
        )
        target.settle([seeded.big_digest, seeded.small_digest])
    return env
