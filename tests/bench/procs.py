"""The servers the bench starts besides the mirror, and /proc sampling of the mirror's memory and CPU.

- `ProxyRegistry`: the reference, Debian's docker-registry (distribution 2.8) in proxy mode.
- `Nginx`: nginx with sendfile serving the cached big blob, the limit for cached-blob scenarios.
- `ProcStats`: CPU seconds and peak RSS of a process and its descendants, from /proc;
  `children_cpu_seconds`: the CPU of the clients the bench ran and waited for (curl).
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path
from typing import Any

from tests.bench.seed import blob_path
from tests.support.net import free_port, wait_http
from tests.support.procs import stop_process
from tests.support.registry import Registry

_STOP_TIMEOUT_S = 10


class ProxyRegistry(Registry):
    """distribution in proxy mode (`proxy.remoteurl`) with its own fresh filesystem storage."""

    def __init__(self, workdir: Path, remote_url: str) -> None:
        super().__init__(workdir)
        self.remote_url = remote_url

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config["proxy"] = {"remoteurl": self.remote_url}
        return config

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        """Whether the proxy has committed `digest` to its own storage (its background store finished)."""
        path = blob_path(self.root, digest)
        return path.is_file() and (size is None or path.stat().st_size == size)


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes auto;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    sendfile_max_chunk 0;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {workdir}/tmp/body;
    proxy_temp_path {workdir}/tmp/proxy;
    fastcgi_temp_path {workdir}/tmp/fastcgi;
    uwsgi_temp_path {workdir}/tmp/uwsgi;
    scgi_temp_path {workdir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {docroot};
        location / {{ }}
    }}
}}
"""


class Nginx:
    """nginx (master + one worker per core) on 127.0.0.1 serving `files` (name -> path) with sendfile.

    Tuned to be the limit: no cap per sendfile call (Debian's 1.22 defaults to 2 MiB chunks, measurably
    slower for one stream here) and `reuseport` so both workers take connections.
    """

    def __init__(self, workdir: Path, files: dict[str, Path]) -> None:
        self.workdir = workdir
        self.files = files
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        docroot = self.workdir / "www"
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        docroot.mkdir(parents=True, exist_ok=True)
        for name, target in self.files.items():
            link = docroot / name
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        conf = self.workdir / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(workdir=self.workdir, port=self.port, docroot=docroot))
        errors = self.workdir / "error.log"
        with (self.workdir / "stderr.log").open("ab") as err:
            self.proc = subprocess.Popen(
                ["nginx", "-p", str(self.workdir), "-e", str(errors), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        try:
            wait_http(f"{self.url}/", ok_statuses={200, 403, 404}, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the master (it stops its workers), SIGKILL after a grace period."""
        proc, self.proc = self.proc, None
        stop_process(proc, grace_s=_STOP_TIMEOUT_S)


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that ended and were waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


class ProcStats:
    """CPU time and peak resident memory of a process tree (the mirror, and any workers it forks)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def pids(self) -> list[int]:
        """The process and its descendants alive now."""
        children = _children_by_parent()
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the tree (utime + stime from /proc/PID/stat)."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / self._tick

    def _status_kib(self, pid: int, key: str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def peak_rss(self) -> int:
        """Bytes: the sum of each process's VmHWM (its peak RSS since start or `reset_peak`)."""
        return sum(self._status_kib(pid, "VmHWM") for pid in self.pids()) * 1024

    def rss(self) -> int:
        """Bytes resident now (VmRSS summed over the tree)."""
        return sum(self._status_kib(pid, "VmRSS") for pid in self.pids()) * 1024

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (`5` into /proc/PID/clear_refs); False if the kernel refused."""
        ok = True
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                ok = False
        return ok
