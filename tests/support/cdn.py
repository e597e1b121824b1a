"""A static file server over a registry's storage: the "CDN" its `redirect` middleware sends blob GETs to."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.registry import Registry, start_registry


@dataclass(frozen=True)
class CdnRequest:
    """One request the CDN received."""

    method: str
    path: str
    headers: dict[str, str]


class BlobServer:
    """Serves files under `root` on 127.0.0.1 (GET/HEAD) and records requests; `fail_with` forces a status."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: list[CdnRequest] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        handler = partial(_make_handler(self), directory=str(root))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="blob-cdn", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL to use as the registry's redirect `baseurl`."""
        return f"http://127.0.0.1:{self.port}"

    def record(self, req: CdnRequest) -> None:
        """Remember one request (called from handler threads)."""
        with self._lock:
            self.seen.append(req)

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BlobServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
