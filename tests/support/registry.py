"""One real `docker-registry serve` process (CNCF distribution 2.8) with its access log parsed."""

from __future__ import annotations

import atexit
import itertools
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.htpasswd import HtpasswdAuth as HtpasswdAuth  # re-exported
from tests.support.net import HttpResponse, free_port, host_port, http_request, raw_request, wait_http
from tests.support.polling import poll
from tests.support.procs import stop_process
from tests.support.tls import TlsFiles
from tests.support.tokenserver import TokenAuth

SENTINEL_PREFIX = "/v2/?mirror-test-sentinel="
# gorilla/handlers combined log format, written by distribution to stdout once a response is complete:
# 127.0.0.1 - - [29/Nov/2026:23:25:05 +0000] "GET /v2/?x=1 HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>\S+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) (?P<size>\d+|-)'
    r'(?: "(?P<referer>[^"]*)" "(?P<ua>[^"]*)")?'
)
_BLOB_PATH = re.compile(r"^/v2/.+/blobs/[^/]+$")
_MANIFEST_PATH = re.compile(r"^/v2/.+/manifests/[^/]+$")
_live: set[Registry] = set()


@dataclass(frozen=True)
class SeenRequest:
    """One request as docker-registry's access log recorded it."""

    method: str
    path: str  # path + query, exactly as requested
    status: int
    size: int | None = None
    user_agent: str = ""

    @property
    def route(self) -> str:
        """The path without the query string."""
        return self.path.partition("?")[0]


class Registry:
    """A docker-registry process on 127.0.0.1 with filesystem storage under `workdir/storage`."""

    def __init__(
        self,
        workdir: Path,
        *,
        auth: HtpasswdAuth | TokenAuth | None = None,
        redirect_baseurl: str | None = None,
        port: int | None = None,
        delete_enabled: bool = False,
        tls: TlsFiles | None = None,
        ip: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir
        self.ip = ip  # the loopback address it listens on: 127.0.0.1 or ::1
        self.auth = auth
        self.tls = tls
        self.redirect_baseurl = redirect_baseurl
        self.delete_enabled = delete_enabled
        self.root = workdir / "storage"
        self.config_path = workdir / "config.yml"
        self.access_log = workdir / "access.log"  # stdout: one combined-format line per response
        self.app_log = workdir / "registry.log"  # stderr: distribution's JSON application log
        self.port = port if port is not None else free_port(ip)
        self._port_chosen = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sentinels = itertools.count()
        self._sentinel_tag = uuid.uuid4().hex[:8]  # unique per instance: logs survive restarts
        workdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:5000 or http://[::1]:5000 (https with `tls`)."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def host(self) -> str:
        """host:port, as used in image references."""
        return host_port(self.ip, self.port)

    @property
    def creds(self) -> tuple[str, str] | None:
        """Credentials a client needs (htpasswd user, or the token server's Basic credentials)."""
        if isinstance(self.auth, HtpasswdAuth):
            return self.auth.creds
        if isinstance(self.auth, TokenAuth) and self.auth.server is not None:
            return self.auth.server.credentials
        return None

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": self.delete_enabled},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "mirror-test-http-secret"},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.tls is not None:
            config["http"]["tls"] = {"certificate": str(self.tls.cert), "key": str(self.tls.key)}
        if isinstance(self.auth, HtpasswdAuth):
            config["auth"] = self.auth.config(self.workdir)
        elif isinstance(self.auth, TokenAuth):
            config["auth"] = self.auth.config()
        if self.redirect_baseurl is not None:
            redirect = {"name": "redirect", "options": {"baseurl": self.redirect_baseurl}}
            config["middleware"] = {"storage": [redirect]}
        return config

    def start(self, deadline_s: float = 10.0) -> None:
        """Start (or restart, same port and storage) and wait until GET /v2/ answers."""
        if self.running:
            return
        for attempt in range(3):
            # JSON is YAML: no quoting pitfalls in paths.
            self.config_path.write_text(json.dumps(self._config(), indent=2))
            with self.access_log.open("ab") as out, self.app_log.open("ab") as err:
                self._proc = subprocess.Popen(
                    ["docker-registry", "serve", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            _live.add(self)
            try:
                # The readiness probe is a sentinel too, so it never shows up in requests().
                cafile = self.tls.ca if self.tls else None
                wait_http(f"{self.url}{SENTINEL_PREFIX}ready", deadline_s, proc=self._proc, cafile=cafile)
            except (RuntimeError, TimeoutError) as exc:
                exited = self._proc.poll() is not None
                self.stop()
                if not exited or self._port_chosen or attempt == 2:
                    raise RuntimeError(f"docker-registry did not start ({exc}); see {self.app_log}") from exc
                self.port = free_port(self.ip)  # most likely lost a race for the port: pick another
            else:
                self._port_chosen = True
                return

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s) and reap it."""
        proc, self._proc = self._proc, None
        _live.discard(self)
        stop_process(proc, grace_s=5)

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        scope: str | None = None,
    ) -> HttpResponse:
        """Send a request to this registry, answering its auth challenge with `creds` if needed."""
        return http_request(
            method, self.url + path, headers=headers, body=body, creds=self.creds, scope=scope
        )

    def _read_log(self) -> list[str]:
        if not self.access_log.exists():
            return []
        text = self.access_log.read_text(errors="replace")
        lines = text.split("\n")
        return lines[:-1]  # the last element is "" or an incomplete line

    def requests(self, since: int = 0) -> list[SeenRequest]:
        """Requests the registry answered, in completion order, from index `since` (see `mark()`).

        While running, a sentinel GET is sent first and the log read until it shows up, so responses a
        client finished reading before this call are included, except one whose handler had not yet
        written its line (distribution logs after the response): `wait_for` a count when it matters.
        Sentinels are not listed.
        """
        if self.running:
            sentinel = f"{SENTINEL_PREFIX}{self._sentinel_tag}-{next(self._sentinels)}"
            raw_request("GET", self.url + sentinel, cafile=self.tls.ca if self.tls else None)
            deadline = time.monotonic() + 5
            needle = f" {sentinel} "
            lines = self._read_log()
            while not any(needle in line for line in lines):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sentinel {sentinel} never reached {self.access_log}")
                time.sleep(0.005)  # polling the log file for the line the server is writing
                lines = self._read_log()
        else:
            lines = self._read_log()
        seen: list[SeenRequest] = []
        for line in lines:
            match = _ACCESS_LINE.match(line)
            if match is None or match["uri"].startswith(SENTINEL_PREFIX):
                continue
            size = None if match["size"] == "-" else int(match["size"])
            seen.append(
                SeenRequest(match["method"], match["uri"], int(match["status"]), size, match["ua"] or "")
            )
        return seen[since:]

    def wait_for(
        self, predicate: Callable[[list[SeenRequest]], bool], since: int = 0, deadline_s: float = 5.0
    ) -> list[SeenRequest]:
        """Poll `requests(since)` until `predicate` holds (for requests the client does not wait on,
        e.g. a mirror's background fetch); return them, or raise TimeoutError with what was seen.
        """
        return poll(lambda: self.requests(since), predicate, deadline_s, "requests in the access log")

    def mark(self) -> int:
        """An index for `requests(since=...)` meaning "from now on"."""
        return len(self.requests())

    def blob_gets(self, since: int = 0) -> list[SeenRequest]:
        """GETs of /v2/<name>/blobs/<digest> (not uploads)."""
        return [r for r in self.requests(since) if r.method == "GET" and _BLOB_PATH.match(r.route)]

    def manifest_gets(self, since: int = 0) -> list[SeenRequest]:
        """GETs of /v2/<name>/manifests/<reference>."""
        return [r for r in self.requests(since) if r.method == "GET" and _MANIFEST_PATH.match(r.route)]


def start_registry(
    workdir: Path,
    *,
    auth: HtpasswdAuth | TokenAuth | None = None,
    redirect_baseurl: str | None = None,
    port: int | None = None,
    delete_enabled: bool = False,
    seed_from: Path | None = None,
    tls: TlsFiles | None = None,
    ip: str = "127.0.0.1",
) -> Registry:
    """Start a registry; `seed_from` first copies an idle registry's storage root (e.g. `upstream.root`)."""
    registry = Registry(
        workdir,
        auth=auth,
        redirect_baseurl=redirect_baseurl,
        port=port,
        delete_enabled=delete_enabled,
        tls=tls,
        ip=ip,
    )
    if seed_from is not None:
        shutil.copytree(seed_from, registry.root, dirs_exist_ok=True)
    registry.start()
    return registry


@atexit.register
def _stop_leftovers() -> None:
    for registry in list(_live):
        registry.stop()
