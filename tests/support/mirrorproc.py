"""The mirror as users run it: `python -m mirror serve` in its own process, on a free loopback port."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port, raw_request, wait_http


class MirrorProcess:
    """One mirror process; `stop()` ends it by PID (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(
        self,
        workdir: Path,
        upstream: str,
        env: Mapping[str, str] | None = None,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        self.workdir = workdir
        self.upstream = upstream
        self.cache_dir = workdir / "cache"
        self.log_path = workdir / "mirror.log"
        self.port = free_port()
        self.extra_env = dict(env or {})
        self.open_files = open_files  # (soft, hard) RLIMIT_NOFILE the process starts with
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> MirrorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
        env.update(MIRROR_LOG_FORMAT="json", **self.extra_env)
        args = [
            sys.executable,
            "-m",
            "mirror",
            "serve",
            "--listen",
            self.host,
            "--upstream",
            self.upstream,
            "--cache-dir",
            str(self.cache_dir),
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._limit
            )
        wait_http(f"{self.url}/readyz", ok_statuses={200}, proc=self.proc)
        return self

    def _limit(self) -> None:
        """In the child before exec: the open-file limit it is started with, if one was given."""
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process with `sig` (SIGKILL to simulate a crash); returns its exit status."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of /metrics by (name, labels)."""
        text = raw_request("GET", f"{self.url}/metrics").body.decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and wanted <= ls)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def __enter__(self) -> MirrorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
