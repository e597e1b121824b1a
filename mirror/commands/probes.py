"""Pull one manifest from a mirror endpoint exactly the way a given runtime asks for it (DESIGN.md §1.1).

The differences between runtimes are data (`PullStyle`): whether they ping `/v2/` first, HEAD before
GET, which Accept they send, whether `?ns=<registry>` is added. A probe proves that the endpoint serves
the image to that runtime: status, `Docker-Content-Digest`, and the body's digest are all checked.
Synchronous (http.client): a handful of requests from a command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from mirror import __version__, oci

PROBE_TIMEOUT_S = 10.0  # per request; a mirror answering slower than this is a problem worth reporting
MAX_PROBE_BYTES = oci.MAX_MANIFEST_BYTES  # a manifest larger than the mirror itself accepts is an error
_ERROR_SNIPPET = 200  # bytes of an unexpected body quoted in a finding


@dataclass(frozen=True)
class PullStyle:
    """How one runtime asks a mirror for a manifest."""

    runtime: str
    ping: bool  # GET /v2/ first
    head_first: bool  # HEAD by tag, then GET by the digest it answered
    accept: str
    send_ns: bool  # ?ns=<registry> on every request (containerd)


CONTAINERD = PullStyle(
    "containerd",
    ping=False,
    head_first=True,
    accept=", ".join([oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST, oci.OCI_INDEX, "*/*"]),
    send_ns=True,
)
DOCKER = PullStyle(
    "docker",
    ping=True,
    head_first=True,
    accept=", ".join(
        [
            oci.DOCKER_MANIFEST,
            oci.DOCKER_MANIFEST_LIST,
            oci.OCI_INDEX,
            oci.OCI_MANIFEST,
            oci.DOCKER_SCHEMA1_SIGNED,
            "application/json",
        ]
    ),
    send_ns=False,
)
PODMAN = PullStyle(
    "podman",
    ping=True,
    head_first=False,
    accept=", ".join(
        [
            oci.OCI_MANIFEST,
            oci.DOCKER_MANIFEST,
            oci.DOCKER_SCHEMA1_SIGNED,
            oci.DOCKER_SCHEMA1,
            oci.DOCKER_MANIFEST_LIST,
            oci.OCI_INDEX,
        ]
    ),
    send_ns=False,
)


@dataclass(frozen=True)
class Endpoint:
    """Where a runtime sends a registry's pulls first, with the TLS and header settings it uses there."""

    url: str  # scheme://host[:port][/path]
    path_prefix: str = ""  # registries.conf `location = "host/prefix"`: /v2/<prefix>/<name>/...
    ca: tuple[str, ...] = ()
    skip_verify: bool = False
    client: tuple[str, str] | None = None  # (certificate, key) files presented to a mirror under mTLS
    headers: tuple[tuple[str, str], ...] = ()
    override_path: bool = False  # containerd: the URL's path is the API root (no /v2 added)
    http_fallback: bool = False  # registries.conf `insecure`: plain http when https cannot connect

    def plain(self) -> Endpoint:
        """The same endpoint over http (what an insecure registries.conf mirror falls back to)."""
        return dataclasses.replace(self, url="http://" + self.url.split("://", 1)[-1], http_fallback=False)


@dataclass
class ProbeResult:
    """What one probe saw; `error` is None when the manifest came back intact."""

    runtime: str
    image: str
    requests: list[str] = field(default_factory=list)  # "HEAD http://.../manifests/x?ns=docker.io -> 200"
    digest: str | None = None
    media_type: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ProbeFailed(Exception):
    """The endpoint did not serve the manifest as the runtime needs it."""


class Unreachable(ProbeFailed):
    """No HTTP answer at all: connection refused, TLS failure, timeout."""


def _context(endpoint: Endpoint) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in endpoint.ca:
        context.load_verify_locations(cafile=ca)
    if endpoint.skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if endpoint.client is not None:
        context.load_cert_chain(*endpoint.client)
    return context


def _api_url(endpoint: Endpoint, image: oci.ImageRef, reference: str, style: PullStyle) -> str:
    base = endpoint.url.rstrip("/")
    if not endpoint.override_path:
        base += "/v2"
    name = f"{endpoint.path_prefix.strip('/')}/{image.name}" if endpoint.path_prefix else image.name
    url = f"{base}/{name}/manifests/{reference}"
    return url + (f"?ns={urllib.parse.quote(image.registry)}" if style.send_ns else "")


def _describe_error(status: int, body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return f"{status} {first.get('code', '?')}: {first.get('message', '')}".rstrip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return f"{status} {body[:_ERROR_SNIPPET]!r}" if body else str(status)


class _Client:
    """One endpoint's connection settings; records every request in the result."""

    def __init__(self, endpoint: Endpoint, style: PullStyle, result: ProbeResult, timeout: float) -> None:
        self.endpoint, self.style, self.result, self.timeout = endpoint, style, result, timeout
        self.headers = {"User-Agent": f"mirror-doctor/{__version__} (as {style.runtime})"}
        self.headers.update(dict(endpoint.headers))

    def send(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn: http.client.HTTPConnection | None = None
        try:
            if parts.scheme == "https":
                context = _context(self.endpoint)  # a missing or bad CA file fails here, as a finding
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            conn.request(method, target, headers={**self.headers, **headers})
            resp = conn.getresponse()
            body = resp.read(MAX_PROBE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.result.requests.append(f"{method} {url} -> {type(exc).__name__}")
            raise Unreachable(f"{method} {url}: {exc or type(exc).__name__}") from None
        finally:
            if conn is not None:
                conn.close()
        self.result.requests.append(f"{method} {url} -> {resp.status}")
        if len(body) > MAX_PROBE_BYTES:
            raise ProbeFailed(f"{method} {url}: answer larger than {MAX_PROBE_BYTES} bytes")
        return resp.status, resp.headers, body


def _check_manifest(status: int, headers: http.client.HTTPMessage, body: bytes, result: ProbeResult) -> None:
    if status != 200:
        raise ProbeFailed(f"manifest answered {_describe_error(status, body)}")
    algorithm, _, _ = (headers.get("Docker-Content-Digest") or "sha256:").partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise ProbeFailed(f"unsupported digest algorithm {algorithm}")
    actual = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
    claimed = headers.get("Docker-Content-Digest")
    if claimed is not None and claimed != actual:
        raise ProbeFailed(f"Docker-Content-Digest says {claimed} but the body is {actual}")
    if result.digest is not None and actual != result.digest:
        raise ProbeFailed(f"GET by digest {result.digest} returned {actual}")
    result.digest, result.media_type = actual, headers.get("Content-Type")


def _pull(client: _Client, endpoint: Endpoint, image: oci.ImageRef, style: PullStyle) -> None:
    result, accept = client.result, {"Accept": style.accept}
    if style.ping:
        base = endpoint.url.rstrip("/") + ("" if endpoint.override_path else "/v2") + "/"
        status, _, body = client.send("GET", base, {})
        if status not in (200, 401):
            raise ProbeFailed(f"GET /v2/ answered {_describe_error(status, body)}")
    reference = image.reference
    if style.head_first and not oci.is_digest(reference):
        url = _api_url(endpoint, image, reference, style)
        status, headers, body = client.send("HEAD", url, accept)
        if status != 200:  # a HEAD answer has no error document: ask again with GET only to explain it
            got, _, body = client.send("GET", url, accept)
            raise ProbeFailed(f"HEAD manifest answered {status}; GET: {_describe_error(got, body)}")
        digest = headers.get("Docker-Content-Digest")
        if digest and headers.get("Content-Length"):  # containerd re-asks with GET by tag otherwise
            result.digest, reference = digest, digest
    status, headers, body = client.send("GET", _api_url(endpoint, image, reference, style), accept)
    _check_manifest(status, headers, body, result)


def probe(
    endpoint: Endpoint, style: PullStyle, image: oci.ImageRef, timeout: float = PROBE_TIMEOUT_S
) -> ProbeResult:
    """Ask `endpoint` for `image`'s manifest as `style.runtime` does; never raises for what servers do."""
    result = ProbeResult(style.runtime, str(image))
    try:
        try:
            _pull(_Client(endpoint, style, result, timeout), endpoint, image, style)
        except Unreachable:
            if not endpoint.http_fallback or len(result.requests) != 1:
                raise
            _pull(_Client(endpoint.plain(), style, result, timeout), endpoint.plain(), image, style)
    except ProbeFailed as exc:
        result.error = str(exc)
    except ValueError as exc:  # a malformed URL or port
        result.error = f"{type(exc).__name__}: {exc}"
    return result
