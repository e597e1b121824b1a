"""The mirror as users run it: `python -m mirror serve` in its own process, on a free loopback port."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import HttpResponse, free_port, host_port, raw_request, wait_http
from tests.support.procs import stop_process
from tests.support.tls import KeyPair, TlsFiles

#: Proxy variables are not inherited from the test run (only set by a test itself): loopback upstreams.
PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "no_proxy", "all_proxy"})


class MirrorProcess:
    """One mirror process; `stop()` ends it by PID (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(
        self,
        workdir: Path,
        upstream: str,
        env: Mapping[str, str] | None = None,
        *,
        ip: str = "127.0.0.1",
        listen: str | None = None,
        tls: TlsFiles | None = None,
        client_cert: KeyPair | None = None,
        args: Sequence[str] = (),
        open_files: tuple[int, int] | None = None,
        cache_fs_size: str | None = None,
    ) -> None:
        """`ip` is the loopback address clients use (127.0.0.1 or ::1; Docker takes every 127.0.0.0/8
        registry for insecure and reads no certs.d for it); `listen` the address to listen on when it is
        another (`::` for all IPv6 addresses), default `ip`. `tls`: serve HTTPS with its cert and key
        (clients trust its CA); `client_cert`: what the readiness probe and `metrics()` present when the
        mirror requires client certificates; `args`: more `mirror serve` arguments;
        `open_files`: the (soft, hard) RLIMIT_NOFILE it starts with; `cache_fs_size` (`64m`): the cache
        directory is a tmpfs of that size, mounted in a private mount namespace of the mirror process
        (needs root; the test reaches it through `cache_path()`)."""
        self.workdir = workdir
        self.tls = tls
        self.client_cert = client_cert
        self.extra_args = list(args)
        self.upstream = upstream
        self.cache_dir = workdir / "cache"
        self.log_path = workdir / "mirror.log"
        self.ip = ip
        self.port = free_port(ip)
        self.listen = host_port(listen or ip, self.port)
        self.extra_env = dict(env or {})
        self.open_files = open_files  # (soft, hard) RLIMIT_NOFILE the process starts with
        self.cache_fs_size = cache_fs_size
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return host_port(self.ip, self.port)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> HttpResponse:
        """One request to the mirror (trusting its CA, presenting `client_cert`)."""
        return raw_request("GET", self.url + path, headers=headers, **self._tls_args())

    def _tls_args(self) -> dict[str, Any]:
        return {"cafile": self.tls.ca, "client_cert": self.client_cert} if self.tls else {}

    def start(self) -> MirrorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MIRROR_") and k.lower() not in PROXY_VARIABLES
        }
        env.update(MIRROR_LOG_FORMAT="json", **self.extra_env)
        args = [
            sys.executable,
            "-m",
            "mirror",
            "serve",
            "--listen",
            self.listen,
            "--upstream",
            self.upstream,
            "--cache-dir",
            str(self.cache_dir),
            *self.extra_args,
        ]
        if self.tls is not None:
            args += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        if self.cache_fs_size is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            args = [*_in_tmpfs(self.cache_dir, self.cache_fs_size), *args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._limit
            )
        wait_http(f"{self.url}/readyz", ok_statuses={200}, proc=self.proc, **self._tls_args())
        return self

    def cache_path(self, relative: str = "") -> Path:
        """A path under the cache directory as the mirror sees it (through its mount namespace when the
        cache is a private tmpfs)."""
        base = self.cache_dir
        if self.cache_fs_size is not None:
            assert self.proc is not None, "the mirror is not running"
            base = Path(f"/proc/{self.proc.pid}/root") / self.cache_dir.relative_to("/")
        return base / relative if relative else base

    def _limit(self) -> None:
        """In the child before exec: the open-file limit it is started with, if one was given."""
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process with `sig` (SIGKILL to simulate a crash); returns its exit status."""
        proc, self.proc = self.proc, None
        return stop_process(proc, sig, grace_s=15)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of /metrics by (name, labels)."""
        text = self.get("/metrics").body.decode()
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


#: Mounts a tmpfs of size $2 on $1 in the new mount namespace, then `exec`s the rest (the PID stays
#: the mirror's, so `stop()` signals the mirror itself).
_TMPFS_SCRIPT = 'set -e; mount -t tmpfs -o "size=$2" mirror-cache "$1"; shift 2; exec "$@"'


def _in_tmpfs(directory: Path, size: str) -> list[str]:
    """The argv prefix that runs a command with `directory` on a private tmpfs of `size`."""
    unshare = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _TMPFS_SCRIPT]
    return [*unshare, "sh", str(directory), size]
