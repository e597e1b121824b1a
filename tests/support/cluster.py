"""Several `mirror serve` processes in the shared mode on one Redis, each with its own cache dir."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.mirrorproc import MirrorProcess

PEER_SECRET = "test-peer-secret-0123456789"
#: Seconds a replica here waits for Redis (`redis_timeout`; 0.25 by default): a loaded 2-core test
#: machine can stall a replica longer than that, and a lock lost so costs a second upstream request
#: where the tests count exactly one. Tests of a stopped Redis measure against this value.
REDIS_TIMEOUT = 1.0


class SharedMirrors:
    """`count` mirrors of one upstream on one Redis, peers of each other; `stop()` ends them by PID."""

    def __init__(
        self,
        workdir: Path,
        upstream: str,
        redis_url: str,
        count: int = 3,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.mirrors: list[MirrorProcess] = []
        for i in range(count):
            mirror = MirrorProcess(workdir / f"replica-{i}", upstream)
            mirror.extra_env.update(
                {
                    "MIRROR_REDIS_URL": redis_url,
                    "MIRROR_ADVERTISE_URL": mirror.url,
                    "MIRROR_PEER_SECRET": PEER_SECRET,
                    "MIRROR_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
                    **(env or {}),  # the caller's win
                }
            )
            self.mirrors.append(mirror)

    def __getitem__(self, index: int) -> MirrorProcess:
        return self.mirrors[index]

    def __iter__(self) -> Iterator[MirrorProcess]:
        return iter(self.mirrors)

    def start(self) -> SharedMirrors:
        """Start them all at once (each start waits for its /readyz)."""
        try:
            with ThreadPoolExecutor(len(self.mirrors)) as pool:
                list(pool.map(MirrorProcess.start, self.mirrors))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for mirror in self.mirrors:
            mirror.stop(sig)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric over the replicas still running."""
        return sum(m.metric(name, **labels) for m in self.mirrors if m.proc is not None)

    def __enter__(self) -> SharedMirrors:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
