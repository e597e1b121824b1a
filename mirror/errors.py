"""Registry errors: one class per error code of the distribution spec, rendered as registry error JSON.

Handlers and the proxy raise these; the error middleware turns them into responses. Upstream library
exceptions are translated into them at the upstream boundary and never reach a handler.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar


class RegistryError(Exception):
    """An error a registry client understands: code, message, HTTP status and optional headers."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    message: ClassVar[str] = "unknown error"

    def __init__(self, detail: Any = None, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail if detail is not None else self.message)
        self.detail = detail
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> bytes:
        """The `{"errors":[...]}` document for this error."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()


class BlobUnknown(RegistryError):
    code, status, message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class ManifestUnknown(RegistryError):
    code, status, message = "MANIFEST_UNKNOWN", 404, "manifest unknown"


class NameUnknown(RegistryError):
    code, status, message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class NotFound(RegistryError):
    code, status, message = "NOT_FOUND", 404, "no such endpoint"


class NameInvalid(RegistryError):
    code, status, message = "NAME_INVALID", 400, "invalid repository name"


class DigestInvalid(RegistryError):
    code, status, message = "DIGEST_INVALID", 400, "provided digest did not match uploaded content"


class ManifestInvalid(RegistryError):
    code, status, message = "MANIFEST_INVALID", 400, "manifest invalid"


class RangeNotSatisfiable(RegistryError):
    code, status, message = "RANGE_INVALID", 416, "requested range not satisfiable"


class Unauthorized(RegistryError):
    code, status, message = "UNAUTHORIZED", 401, "authentication required"


class Denied(RegistryError):
    code, status, message = "DENIED", 403, "requested access to the resource is denied"


class Unsupported(RegistryError):
    code, status, message = "UNSUPPORTED", 405, "the operation is unsupported"


class TooManyRequests(RegistryError):
    code, status, message = "TOOMANYREQUESTS", 429, "too many requests"


class MalformedRequest(RegistryError):
    """A request the HTTP parser refused (bad request line, header, framing)."""

    code, status, message = "UNSUPPORTED", 400, "malformed HTTP request"


class ConnectionLimit(RegistryError):
    """The mirror holds as many client connections as it may: try again in a moment."""

    code, status, message = "UNAVAILABLE", 503, "too many connections to the mirror, retry shortly"


class UpstreamUnavailable(RegistryError):
    """The upstream could not be reached, timed out, or answered 5xx."""

    code, status, message = "UNAVAILABLE", 503, "upstream registry unavailable"


class UpstreamBadGateway(RegistryError):
    """The upstream answered something a registry must not: wrong bytes, oversized manifest, bad redirect."""

    code, status, message = "UNAVAILABLE", 502, "upstream registry sent an invalid response"


class StorageUnavailable(RegistryError):
    """The mirror's own cache (disk or index) failed: a server-side fault, not the client's."""

    code, status, message = "UNAVAILABLE", 503, "the mirror's cache storage is unavailable"


_BY_CODE_404: dict[str, type[RegistryError]] = {
    cls.code: cls for cls in (BlobUnknown, ManifestUnknown, NameUnknown)
}


def not_found_for(kind: str, upstream_code: str | None) -> type[RegistryError]:
    """The 404 error class to relay: the upstream's own code when it is a known one, else by kind."""
    if upstream_code in _BY_CODE_404:
        return _BY_CODE_404[upstream_code]
    return BlobUnknown if kind == "blob" else ManifestUnknown if kind == "manifest" else NameUnknown


def upstream_error_code(body: bytes) -> str | None:
    """The first error code in an upstream registry error document, if it is one."""
    try:
        doc = json.loads(body)
        code = doc["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return code if isinstance(code, str) else None


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a transport exception."""
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is the same class since 3.11
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]
