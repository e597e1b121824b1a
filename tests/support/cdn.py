"""A static file server over a registry's storage: the "CDN" its `redirect` middleware sends blob GETs to."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.support.net import BackgroundServer
from tests.support.registry import Registry, start_registry


@dataclass(frozen=True)
class CdnRequest:
    """One request the CDN received."""

    method: str
    path: str
    headers: dict[str, str]


class BlobServer(BackgroundServer):
    """Serves files under `root` on 127.0.0.1 (GET/HEAD) and records requests; `fail_with` forces a status."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: list[CdnRequest] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        super().__init__(partial(_make_handler(self), directory=str(root)), "blob-cdn")

    @property
    def url(self) -> str:
        """Base URL to use as the registry's redirect `baseurl`."""
        return f"http://127.0.0.1:{self.port}"

    def record(self, req: CdnRequest) -> None:
        """Remember one request (called from handler threads)."""
        with self._lock:
            self.seen.append(req)


def _make_handler(server: BlobServer) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def _intercept(self) -> bool:
            server.record(CdnRequest(self.command, self.path, dict(self.headers.items())))
            if server.fail_with is None:
                return False
            self.send_response(server.fail_with)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True

        def do_GET(self) -> None:
            if not self._intercept():
                super().do_GET()

        def do_HEAD(self) -> None:
            if not self._intercept():
                super().do_HEAD()

    return Handler


def start_redirecting_registry(
    workdir: Path, *, seed_from: Path | None = None, **kwargs: Any
) -> tuple[Registry, BlobServer]:
    """A registry whose blob GET/HEAD answer 307 to a BlobServer over its own storage (stop both after)."""
    cdn = BlobServer(workdir / "storage")
    try:
        registry = start_registry(workdir, redirect_baseurl=cdn.url, seed_from=seed_from, **kwargs)
    except BaseException:
        cdn.stop()
        raise
    return registry, cdn
