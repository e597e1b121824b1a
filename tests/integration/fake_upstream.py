"""A hand-written upstream registry on a real socket, for faults the real one cannot produce.

It serves manifests and blobs from dicts, records every request it sees, and injects per-digest faults:
wrong bytes, a body cut off once or always, a stalled response, a body in tiny HTTP chunks, a 307 to a
second origin (a "CDN"). `RawUpstream` writes scripted bytes for faults an HTTP library refuses to make.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.digests import sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DRIBBLE = 97  # bytes per HTTP chunk of a "chunked_dribble" body
DRIP_SECONDS = 0.05  # seconds between the bytes of a "drip" body
PACED_CHUNK = 64 * 1024  # bytes per write of a body paced to `rate`


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeUpstream:
    """State and behaviour of the fake; `app()` builds the aiohttp application serving it."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)  # digest or "manifest" → fault name
    seen: list[Seen] = field(default_factory=list)
    token: str | None = None  # when set, /v2 requests need "Bearer <token>" (realm: /token)
    token_expires_in: int | None = 300
    redirect_to: str | None = None  # base URL of the CDN that serves blobs
    release: asyncio.Event = field(default_factory=asyncio.Event)  # lets stalled responses go on
    status_override: tuple[int, dict[str, str]] | None = None  # answer every /v2 request with this
    manifest_headers: dict[str, str] = field(default_factory=dict)  # e.g. rate-limit headers
    # The referrers API, when `referrers_api`: descriptors by subject digest, `referrers_page` per page,
    # each page's Link naming the next; `referrers_link` replaces that Link (a loop, another origin).
    tags_link: str | None = None  # a Link header for tag list answers
    referrers_api: bool = False
    referrers: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    referrers_page: int = 2
    referrers_link: str | None = None
    realm: str | None = None  # the token realm challenges name (default: /token on this server)
    strict_accept: bool = False  # answer 406 when the Accept names no manifest's type
    # Blob bodies: `rate` bytes per second per response (None: at once); `sent` counts the body bytes
    # each digest's responses wrote; `stall_after` holds a body sent without Range after that many
    # bytes until `release`; a ranged body starting at `stall_range_at` waits for `release` before its
    # first byte, one starting at `cut_range_at` is cut off after half.
    rate: int | None = None
    sent: dict[str, int] = field(default_factory=dict)
    stall_after: dict[str, int] = field(default_factory=dict)
    stall_range_at: dict[str, int] = field(default_factory=dict)
    cut_range_at: dict[str, int] = field(default_factory=dict)

    def add_blob(self, data: bytes) -> str:
        digest = sha256(data)
        self.blobs[digest] = data
        return digest

    def add_manifest(self, name: str, tag: str, layers: list[str], media_type: str = OCI_MANIFEST) -> str:
        doc = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": layers[0],
                "size": 1,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1}
                for d in layers
            ],
        }
        body = json.dumps(doc, indent=3).encode()
        digest = sha256(body)
        self.manifests[(name, tag)] = (body, media_type)
        self.manifests[(name, digest)] = (body, media_type)
        return digest

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        return [s for s in self.seen if (method is None or s.method == method) and contains in s.path]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self._token)
        app.router.add_route("*", "/v2/{name:.+}/manifests/{ref}", self._manifest)
        app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", self._blob)
        app.router.add_get("/v2/{name:.+}/tags/list", self._tags)
        app.router.add_get("/v2/{name:.+}/referrers/{digest}", self._referrers)
        return app

    def cdn_app(self) -> web.Application:
        """The second origin blobs are redirected to; it refuses any request carrying Authorization."""
        app = web.Application()

        async def serve(request: web.Request) -> web.StreamResponse:
            self.seen.append(Seen(request.method, "cdn:" + request.raw_path, dict(request.headers)))
            if "Authorization" in request.headers:
                return web.Response(status=400, text="Authorization sent to the CDN")
            return await self._send_blob(request, request.match_info["digest"])

        app.router.add_get("/cdn/{digest}", serve)
        return app

    def _record(self, request: web.Request) -> None:
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers)))

    def _challenge(self, request: web.Request) -> web.Response | None:
        if self.status_override is not None:
            status, headers = self.status_override
            return web.json_response(
                {"errors": [{"code": "X", "message": "injected"}]}, status=status, headers=headers
            )
        if self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}":
            return None
        host = request.host
        name = request.match_info["name"]
        realm = self.realm or f"http://{host}/token"
        challenge = f'Bearer realm="{realm}",service="fake",scope="repository:{name}:pull"'
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "auth"}]},
            status=401,
            headers={"WWW-Authenticate": challenge},
        )

    async def _token(self, request: web.Request) -> web.Response:
        self._record(request)
        doc: dict[str, object] = {"token": self.token}
        if self.token_expires_in is not None:
            doc["expires_in"] = self.token_expires_in
        return web.json_response(doc)

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        if (denied := self._challenge(request)) is not None:
            return denied
        if self.faults.get("manifest") == "stall":
            await self.release.wait()
        found = self.manifests.get((request.match_info["name"], request.match_info["ref"]))
        if found is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]}, status=404)
        body, media_type = found
        if self.strict_accept and media_type not in request.headers.get("Accept", ""):
            return web.json_response({"errors": [{"code": "UNSUPPORTED", "message": "accept"}]}, status=406)
        announced = sha256(body)
        if self.faults.get("manifest") == "wrong_digest":
            announced = sha256(b"something else")
        headers = {"Docker-Content-Digest": announced, "Content-Type": media_type, **self.manifest_headers}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(body))})
        return web.Response(body=body, headers=headers)

    async def _tags(self, request: web.Request) -> web.Response:
        self._record(request)
        if (denied := self._challenge(request)) is not None:
            return denied
        name = request.match_info["name"]
        tags = sorted({ref for (n, ref) in self.manifests if n == name and ":" not in ref})
        headers = {"Link": self.tags_link} if self.tags_link else {}
        return web.json_response({"name": name, "tags": tags}, headers=headers)

    async def _referrers(self, request: web.Request) -> web.Response:
        self._record(request)
        if (denied := self._challenge(request)) is not None:
            return denied
        if not self.referrers_api:  # what distribution 2.8 answers for a route it does not have
            return web.Response(status=404, text="404 page not found\n")
        entries = self.referrers.get(request.match_info["digest"], [])
        page = int(request.query.get("page", "0"))
        size = self.referrers_page
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries[page * size : (page + 1) * size],
        }
        headers = {}
        if self.referrers_link is not None:
            headers["Link"] = self.referrers_link
        elif (page + 1) * size < len(entries):
            headers["Link"] = f'<{request.path}?page={page + 1}>; rel="next"'
        return web.json_response(doc, content_type=OCI_INDEX, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        if (denied := self._challenge(request)) is not None:
            return denied
        digest = request.match_info["digest"]
        if digest not in self.blobs:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "no"}]}, status=404)
        if request.method == "HEAD":
            return web.Response(
                headers={"Content-Length": str(len(self.blobs[digest])), "Docker-Content-Digest": digest}
            )
        if self.redirect_to:
            # A raw Location: a signed CDN URL must reach the CDN byte for byte (no re-encoding).
            return web.Response(
                status=307, headers={"Location": f"{self.redirect_to}/cdn/{digest}?sig=a%2Fb"}
            )
        return await self._send_blob(request, digest)

    async def _send_blob(self, request: web.Request, digest: str) -> web.StreamResponse:
        data = self.blobs[digest]
        fault = self.faults.get(digest, "")
        if fault == "stall_headers":
            await self.release.wait()
        start, end = 0, len(data)
        rng = request.headers.get("Range") if fault != "ignore_range" else None
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) + 1 if last else len(data)
        status = 206 if rng else 200
        body = data[start:end]
        if fault == "wrong_bytes":
            body = bytes(b ^ 0xFF for b in body)
        response = web.StreamResponse(status=status, headers={"Docker-Content-Digest": digest})
        if fault == "chunked_dribble":  # no Content-Length: many small HTTP chunks
            response.enable_chunked_encoding()
            await response.prepare(request)
            for offset in range(0, len(body), DRIBBLE):
                await response.write(body[offset : offset + DRIBBLE])
            await response.write_eof()
            return response
        response.content_length = len(body)
        if rng:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        await response.prepare(request)
        if self.rate is not None or digest in self.stall_after or digest in self.stall_range_at:
            await self._paced(request, response, digest, body, ranged=bool(rng), start=start)
            return response
        half = len(body) // 2
        if (fault == "truncate_once" and not start) or fault == "truncate_always":
            if fault == "truncate_once":
                self.faults[digest] = "done"
            await response.write(body[:half])
            assert request.transport is not None
            request.transport.close()
            return response
        if fault == "drip":  # one byte every DRIP_SECONDS, until released
            for offset in range(len(body)):
                if self.release.is_set():
                    break
                await response.write(body[offset : offset + 1])
                await asyncio.sleep(DRIP_SECONDS)
            await response.write_eof()
            return response
        if fault in ("stall_midway", "stall_late"):
            cut = half if fault == "stall_midway" else len(body) * 9 // 10
            await response.write(body[:cut])
            await self.release.wait()
            await response.write(body[cut:])
        else:
            await response.write(body)
        await response.write_eof()
        return response

    async def _paced(
        self,
        request: web.Request,
        response: web.StreamResponse,
        digest: str,
        body: bytes,
        ranged: bool,
        start: int,
    ) -> None:
        """Write `body` at `rate`, counting what is written into `sent`; stall or cut it as asked."""
        stall = self.stall_after.get(digest) if not ranged else None
        if ranged and self.stall_range_at.get(digest) == start:
            stall = 0
        cut = len(body) // 2 if ranged and self.cut_range_at.get(digest) == start else None
        loop = asyncio.get_running_loop()
        began, done = loop.time(), 0
        while done < len(body):
            if done == stall:
                await self.release.wait()
            if done == cut:
                assert request.transport is not None
                request.transport.close()
                return
            stop = min(
                len(body), done + PACED_CHUNK, *(m for m in (stall, cut) if m is not None and m > done)
            )
            try:
                await response.write(body[done:stop])
            except ConnectionError:
                return
            self.sent[digest] = self.sent.get(digest, 0) + stop - done
            done = stop
            if self.rate is not None and (ahead := began + done / self.rate - loop.time()) > 0:
                await asyncio.sleep(ahead)
        await response.write_eof()


RawAnswer = bytes | AsyncIterator[bytes]


@dataclass
class RawUpstream:
    """An upstream that writes whatever bytes a test scripts, for faults no HTTP library would send
    (a `Content-Length: ²`, a redirect to port 99999, a body longer than announced, no headers at all).

    `answer(method, path, headers)` gives the whole response (status line, headers, body), as bytes or
    an async iterator of pieces; each connection carries one exchange and is then closed."""

    answer: Callable[[str, str, dict[str, str]], Awaitable[RawAnswer]]
    seen: list[Seen] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None, "RawUpstream not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            line, *lines = head.split("\r\n")
            method, path, _ = line.split(" ", 2)
            headers = dict(h.split(":", 1) for h in lines if ":" in h)
            headers = {k.strip(): v.strip() for k, v in headers.items()}
            self.seen.append(Seen(method, path, headers))
            answer = await self.answer(method, path, headers)
            if isinstance(answer, bytes):
                writer.write(answer)
            else:
                async for piece in answer:
                    writer.write(piece)
                    await writer.drain()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def raw_response(status: int, headers: dict[str, str], body: bytes = b"", close: bool = True) -> bytes:
    """An HTTP/1.1 response exactly as given: no header is added or checked (but `Connection: close`
    unless `close` is false; the connection is closed after it anyway)."""
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers.items())]
    lines += ["Connection: close"] if close else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
