"""The client of one upstream registry: auth retries, redirects, error translation, accounting.

It owns its two transports (`transport.py`): an aiohttp session for manifests, tokens and tag lists,
and blocking connections in transfer threads for blob bodies. Every transport failure and every
unusable upstream status is translated here into a `RegistryError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import structlog
from yarl import URL

from mirror import __version__, errors, oci
from mirror.config import UpstreamSettings
from mirror.metrics import Metrics
from mirror.upstream import clientauth, fields
from mirror.upstream.auth import Challenge, UpstreamAuth, mirror_refused
from mirror.upstream.health import UpstreamHealth
from mirror.upstream.session import SessionResponse, SessionTransport
from mirror.upstream.threaded import ThreadedResponse, ThreadedTransport, TransportBusy
from mirror.upstream.transport import BlobBody, CountedBody, Response, Transport, TransportError, byte_range

R = TypeVar("R", bound=Response)
MAX_REDIRECTS = 5
USER_AGENT = f"mirror/{__version__}"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Upstream response headers relayed with a tags list.
_TAGS_HEADERS = ("Link", "Content-Type")
#: A tags list bigger than this is refused rather than held in memory.
MAX_TAGS_BYTES = 16 * 1024 * 1024
#: What a registry without the referrers API (Docker Hub, distribution 2.8) answers for its route.
_NO_REFERRERS_API = frozenset({404, 405})
#: A token response bigger than this is refused (real ones are a few KiB).
MAX_TOKEN_BYTES = 1024 * 1024
#: Bytes of an upstream error document read to find its code.
MAX_ERROR_BYTES = 64 * 1024

log = structlog.get_logger("mirror.upstream")


@dataclass(frozen=True, slots=True)
class ManifestHead:
    """What an upstream HEAD says about a manifest."""

    digest: str
    media_type: str


@dataclass(frozen=True, slots=True)
class ReferrersPage:
    """One page of an upstream referrers list and its `Link` header (naming the next page, if any)."""

    body: bytes
    link: str | None


def error_for_status(status: int, kind: str, body: bytes, headers: Mapping[str, str]) -> errors.RegistryError:
    """The registry error a client gets for an upstream answer with `status`."""
    code = errors.upstream_error_code(body)
    if status == 401:
        return mirror_refused()
    if status == 403:
        return errors.Denied("the upstream registry denied access")
    if status == 404:
        return errors.not_found_for(kind, code)(f"upstream answered 404 ({code or 'no code'})")
    if status == 429:
        retry = {"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else None
        return errors.TooManyRequests("the upstream registry is rate-limiting the mirror", headers=retry)
    if status >= 500:
        return errors.UpstreamUnavailable(f"upstream answered {status}")
    return errors.UpstreamBadGateway(f"upstream answered {status} ({code or 'no code'})")


class UpstreamClient:
    """Pull-side requests to one upstream registry, as an async context manager owning the session."""

    def __init__(self, settings: UpstreamSettings, metrics: Metrics, health: UpstreamHealth) -> None:
        self.label = settings.registry
        self.health = health
        self._base = URL(settings.url)
        self._settings = settings
        self._metrics = metrics
        self._session: SessionTransport | None = None
        self._bodies: ThreadedTransport | None = None
        self.auth = self.auth_for(settings.username, settings.password)

    def auth_for(self, username: str | None, password: str | None) -> UpstreamAuth:
        """Auth state for these credentials against this upstream (the mirror's own, or a client's)."""
        realms = frozenset(self._settings.auth_realms)
        return UpstreamAuth(self._settings.url, self._fetch_token, username, password, realms)

    async def __aenter__(self) -> UpstreamClient:
        connect, read = self._settings.connect_timeout, self._settings.read_timeout
        egress = self._settings.egress
        self._session = SessionTransport(connect, read, USER_AGENT, egress)
        self._bodies = ThreadedTransport(
            connect, read, egress, self._settings.max_transfers, self._settings.fill_memory_bytes
        )
        await asyncio.to_thread(ThreadedTransport.warm)
        await asyncio.to_thread(self._bodies.prestart)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.auth.close()
        for transport in (self._session, self._bodies):
            if transport is not None:
                await transport.close()

    @property
    def session(self) -> SessionTransport:
        assert self._session is not None, "UpstreamClient used outside its context"
        return self._session

    @property
    def bodies(self) -> ThreadedTransport:
        assert self._bodies is not None, "UpstreamClient used outside its context"
        return self._bodies

    # -- registry endpoints -------------------------------------------------------------------

    async def get_manifest(self, name: str, reference: str, accept: list[str]) -> oci.Manifest:
        """The manifest's exact bytes, checked against the requested or announced digest."""
        resp = await self._ok("GET", name, f"manifests/{reference}", "manifest", accept)
        try:
            body = await _read_capped(resp, oci.MAX_MANIFEST_BYTES, "manifest")
            announced = fields.digest(resp.headers.get("Docker-Content-Digest"))
            length = fields.content_length(resp.headers.get("Content-Length"))
            content_type = resp.headers.get("Content-Type")
        finally:
            resp.release()
        expected = reference if oci.is_digest(reference) else announced
        algorithm = oci.Digest.parse(expected).algorithm if expected else "sha256"
        digest = str(oci.Digest.of(body, algorithm))
        if expected and digest != expected:
            raise errors.UpstreamBadGateway(f"upstream manifest bytes hash to {digest}, not {expected}")
        _check_manifest_body(body, length)
        return oci.Manifest(body, digest, oci.sniff_media_type(body, content_type))

    async def head_manifest(self, name: str, reference: str, accept: list[str]) -> ManifestHead | None:
        """The digest the upstream gives for a manifest, or None when its answer lacks one."""
        resp = await self._ok("HEAD", name, f"manifests/{reference}", "manifest", accept)
        resp.release()
        digest = fields.digest(resp.headers.get("Docker-Content-Digest"))
        media_type = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        if not digest:
            return None
        return ManifestHead(digest, media_type)

    async def open_blob(self, name: str, digest: str, offset: int = 0, end: int | None = None) -> BlobBody:
        """A blob response (200, or 206 for bytes [`offset`, `end`)) with its headers read; the caller
        must release it.

        It is received over the threaded transport while one of its `max_transfers` threads is free,
        else over the session: asking for headers never waits behind running bodies."""
        headers = {"Range": byte_range(offset, end)} if offset or end is not None else {}
        path = f"blobs/{digest}"
        if self.bodies.active < self.bodies.max_transfers:
            with contextlib.suppress(TransportBusy):  # taken meanwhile (during auth)
                threaded: ThreadedResponse = await self._checked(
                    self.bodies, "GET", name, path, "blob", headers=headers
                )
                self._metrics.blob_transfers.labels("threaded").inc()
                return CountedBody(threaded, self._metrics.upstream_bytes.labels(self.label).inc)
        session: SessionResponse = await self._checked(
            self.session, "GET", name, path, "blob", headers=headers
        )
        self._metrics.blob_transfers.labels("session").inc()
        return CountedBody(session, self._metrics.upstream_bytes.labels(self.label).inc)

    async def head_blob(self, name: str, digest: str) -> int | None:
        """The blob's size as the upstream announces it."""
        resp = await self._ok("HEAD", name, f"blobs/{digest}", "blob")
        resp.release()
        return resp.content_length

    async def challenge(self) -> str | None:
        """The upstream's anonymous `GET /v2/` challenge (relayed to clients in client mode), if any."""
        resp = await self._send(self.session, "GET", URL(f"{self._settings.url}/v2/"), {}, "base")
        if resp.status == 401:
            return _challenge_of(resp)
        resp.release()
        return None

    async def tags(self, name: str, query: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        """The upstream's tag list body and the headers worth relaying (pagination `Link`)."""
        path = "tags/list"
        resp = await self._ok("GET", name, path, "tags", query=query)
        try:
            body = await _read_capped(resp, MAX_TAGS_BYTES, "tag list")
            relay = {h: resp.headers[h] for h in _TAGS_HEADERS if h in resp.headers}
        finally:
            resp.release()
        return body, relay

    async def referrers_page(self, name: str, digest: str, page: str | None = None) -> ReferrersPage | None:
        """One page of the upstream's referrers list for `digest` (`page`: a next-page URL from the
        `Link` of the one before), or None when the upstream has no referrers API (404 or 405)."""
        url = URL(f"{self._settings.url}/v2/{name}/referrers/{digest}")
        if page is not None:
            url = url.join(URL(page, encoded=True))
            if url.origin() != self._base.origin():
                raise errors.UpstreamBadGateway("the upstream's referrers Link leaves its origin")
        accept = {"Accept": oci.OCI_INDEX}
        resp = await self._authorized(
            self.session, "GET", url, accept, f"repository:{name}:pull", "referrers"
        )
        try:
            if resp.status in _NO_REFERRERS_API:
                return None
            if not 200 <= resp.status < 300:
                raise error_for_status(resp.status, "referrers", await _error_body(resp), resp.headers)
            body = await _read_capped(resp, oci.MAX_MANIFEST_BYTES, "referrers list")
            return ReferrersPage(body, resp.headers.get("Link"))
        finally:
            resp.release()

    # -- transport ----------------------------------------------------------------------------

    async def _ok(
        self,
        method: str,
        name: str,
        path: str,
        kind: str,
        accept: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> SessionResponse:
        """A 2xx response over the session, or the registry error for what the upstream said."""
        return await self._checked(self.session, method, name, path, kind, accept, headers, query)

    async def _checked(
        self,
        transport: Transport[R],
        method: str,
        name: str,
        path: str,
        kind: str,
        accept: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> R:
        """A response with a 2xx status over `transport`, or the registry error for what the upstream said."""
        url = URL(f"{self._settings.url}/v2/{name}/{path}")
        if query:
            url = url.with_query(query)
        send = dict(headers or {})
        if accept:
            send["Accept"] = ", ".join(accept)
        resp = await self._authorized(transport, method, url, send, f"repository:{name}:pull", kind)
        if 200 <= resp.status < 300:
            return resp
        try:
            body = b"" if method == "HEAD" else await _error_body(resp)
        finally:
            resp.release()
        raise error_for_status(resp.status, kind, body, resp.headers)

    async def _authorized(
        self, transport: Transport[R], method: str, url: URL, headers: dict[str, str], scope: str, kind: str
    ) -> R:
        """Send with the known credentials (the client's own, for an upstream in client mode); on a 401,
        answer its challenge and retry once."""
        auth: clientauth.Authorizer = clientauth.current(self.label) or self.auth
        authorization = await auth.authorization(scope)
        resp = await self._follow(transport, method, url, headers, authorization, kind)
        if resp.status == 401:
            challenge = _challenge_of(resp)
            retry = await auth.answer(challenge, scope, authorization)
            if retry is None:
                raise auth.refused(challenge)
            resp = await self._follow(transport, method, url, headers, retry, kind)
            if resp.status == 401:
                raise auth.refused(_challenge_of(resp))
        return resp

    async def _follow(
        self,
        transport: Transport[R],
        method: str,
        url: URL,
        headers: dict[str, str],
        authorization: str | None,
        kind: str,
    ) -> R:
        """Send, following redirects by hand so `Authorization` never leaves the upstream's origin."""
        for _ in range(MAX_REDIRECTS + 1):
            send = dict(headers)
            if authorization and url.origin() == self._base.origin():
                send["Authorization"] = authorization
            resp = await self._send(transport, method, url, send, kind)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            resp.release()
            url = fields.redirect_target(url, location)
        raise errors.UpstreamBadGateway(f"more than {MAX_REDIRECTS} redirects")

    async def _send(
        self, transport: Transport[R], method: str, url: URL, headers: dict[str, str], kind: str
    ) -> R:
        """One request over `transport`, counted for the breaker and metrics."""
        self.health.admit()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._settings.headers_timeout):
                resp = await transport.send(method, url, {"User-Agent": USER_AGENT, **headers})
        except TimeoutError:
            self._metrics.upstream_requests.labels(self.label, kind, "error").inc()
            self.health.failed("timeout")
            raise errors.UpstreamUnavailable(
                f"upstream sent no {kind} headers within {self._settings.headers_timeout:g} s"
            ) from None
        except TransportError as exc:
            self._metrics.upstream_requests.labels(self.label, kind, "error").inc()
            self.health.failed("timeout" if exc.timeout else "connect")
            raise errors.UpstreamUnavailable(f"upstream {kind} request failed: {exc}") from None
        except (errors.RegistryError, TransportBusy):
            self.health.abandon()
            raise
        except Exception as exc:  # anything else the exchange raised: the upstream's fault, never a 500
            self._metrics.upstream_requests.labels(self.label, kind, "error").inc()
            self.health.failed("connect")
            log.exception("upstream_exchange_failed", upstream=self.label, endpoint=kind)
            raise errors.UpstreamBadGateway(
                f"upstream {kind} answer unusable: {errors.describe(exc)}"
            ) from None
        except BaseException:
            self.health.abandon()
            raise
        self.health.answered(resp.status, resp.headers, kind)
        self._metrics.upstream_requests.labels(self.label, kind, str(resp.status)).inc()
        self._metrics.upstream_duration.labels(self.label, kind, str(resp.status)).observe(
            time.monotonic() - started
        )
        return resp

    async def _fetch_token(self, challenge: Challenge, scope: str, basic: str | None) -> tuple[str, object]:
        """GET a bearer token from the challenge's realm; returns (token, expires_in)."""
        realm = fields.http_url(challenge.realm, "token realm")
        query = {**realm.query, "scope": scope}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        headers = {"Authorization": basic} if basic else {}
        outcome = "error"
        try:
            resp = await self._send(self.session, "GET", realm.with_query(query), headers, "token")
            try:
                if resp.status != 200:
                    outcome = str(resp.status)
                    raise error_for_status(
                        resp.status if resp.status in (401, 403) else 502, "token", b"", {}
                    )
                body = await _read_capped(resp, MAX_TOKEN_BYTES, "token response")
            finally:
                resp.release()
            doc: Any = json.loads(body)
            token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
            if not isinstance(token, str) or not token:
                raise errors.UpstreamBadGateway("token server answered without a token")
            outcome = "ok"
            return token, doc.get("expires_in")
        except ValueError:
            raise errors.UpstreamBadGateway("token server answered with a body that is not JSON") from None
        finally:
            self._metrics.token_fetches.labels(self.label, outcome).inc()


def _check_manifest_body(body: bytes, length: int | None) -> None:
    """A manifest fetched by tag without a digest header has nothing to be checked against but its own
    length and form: a body shorter or longer than announced, or one that is not a JSON document, is
    refused (and so never cached)."""
    if length is not None and len(body) != length:
        raise errors.UpstreamBadGateway(f"upstream manifest is {len(body)} bytes, announced {length}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise errors.UpstreamBadGateway("upstream manifest is not a JSON document") from None
    if not isinstance(doc, dict):
        raise errors.UpstreamBadGateway("upstream manifest is not a JSON object")


def _challenge_of(resp: Response) -> str:
    """The `WWW-Authenticate` of a 401, whose body is not needed: the response is released."""
    resp.release()
    return resp.headers.get("WWW-Authenticate", "")


async def _read_capped(resp: Response, limit: int, what: str) -> bytes:
    """The whole body, refused past `limit` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise errors.UpstreamBadGateway(f"upstream {what} of {resp.content_length} bytes exceeds {limit}")
    try:
        body = await resp.read(limit + 1)
    except TransportError as exc:
        raise errors.UpstreamUnavailable(f"reading upstream {what} failed: {exc}") from None
    if len(body) > limit:
        raise errors.UpstreamBadGateway(f"upstream {what} exceeds {limit} bytes")
    return body


async def _error_body(resp: Response) -> bytes:
    """The start of an error document, or nothing when it cannot be read."""
    try:
        return await resp.read(MAX_ERROR_BYTES)
    except TransportError:
        return b""
