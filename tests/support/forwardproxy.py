"""A real forward proxy: Debian's tinyproxy in the foreground on a free loopback port, its log parsed."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port

# tinyproxy (LogLevel Info) logs each request it receives from a client as
# CONNECT   Dec 01 08:58:43.922 [7686]: Request (file descriptor 5): GET http://127.0.0.1:1/ HTTP/1.1
# and each tunnel as "... Request (file descriptor 6): CONNECT 127.0.0.1:443 HTTP/1.1".
_REQUEST = re.compile(r"Request \(file descriptor \d+\): (?P<method>\S+) (?P<target>\S+) HTTP/")
START_DEADLINE_S = 10.0


@dataclass(frozen=True)
class ProxiedRequest:
    """One request line tinyproxy received: an absolute URI, or host:port for a CONNECT."""

    method: str
    target: str


class TinyProxy:
    """`tinyproxy -d -c CONF` listening on 127.0.0.1; `credentials` makes it demand Basic proxy auth."""

    def __init__(self, workdir: Path, credentials: tuple[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "tinyproxy.log"
        self.credentials = credentials
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def url(self, with_credentials: bool = False) -> str:
        """The proxy URL, e.g. http://127.0.0.1:8888 (with user:password@ if asked)."""
        userinfo = (
            f"{self.credentials[0]}:{self.credentials[1]}@" if with_credentials and self.credentials else ""
        )
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def start(self) -> TinyProxy:
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            f'LogFile "{self.log_path}"',
            "LogLevel Info",
            "MaxClients 64",
            "Timeout 60",
            "DisableViaHeader Yes",
        ]
        if self.credentials is not None:
            lines.append(f"BasicAuth {self.credentials[0]} {self.credentials[1]}")
        config = self.workdir / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        with (self.workdir / "tinyproxy.out").open("ab") as out:
            self._proc = subprocess.Popen(
                ["tinyproxy", "-d", "-c", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"tinyproxy did not start; see {self.workdir}") from None
                time.sleep(0.02)  # polling for the listening socket
            else:
                return self

    def stop(self) -> None:
        """Terminate the process by its PID and reap it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def requests(self) -> list[ProxiedRequest]:
        """Every request line logged so far (tinyproxy logs a request when it has read its line)."""
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text(errors="replace")
        return [ProxiedRequest(m["method"], m["target"]) for m in _REQUEST.finditer(text)]

    def targets(self, method: str | None = None) -> list[str]:
        """The targets of the logged requests (of `method` only, if given)."""
        return [r.target for r in self.requests() if method is None or r.method == method]

    def __enter__(self) -> TinyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
