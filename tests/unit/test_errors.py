"""Unit tests for mirror.errors: registry error codes, statuses, JSON bodies and upstream translation."""

from __future__ import annotations

import json

import pytest

from mirror import errors
from mirror.errors import RegistryError


@pytest.mark.parametrize(
    ("cls", "code", "status"),
    [
        (errors.BlobUnknown, "BLOB_UNKNOWN", 404),
        (errors.ManifestUnknown, "MANIFEST_UNKNOWN", 404),
        (errors.NameUnknown, "NAME_UNKNOWN", 404),
        (errors.NameInvalid, "NAME_INVALID", 400),
        (errors.DigestInvalid, "DIGEST_INVALID", 400),
        (errors.ManifestInvalid, "MANIFEST_INVALID", 400),
        (errors.Unauthorized, "UNAUTHORIZED", 401),
        (errors.Denied, "DENIED", 403),
        (errors.Unsupported, "UNSUPPORTED", 405),
        (errors.TooManyRequests, "TOOMANYREQUESTS", 429),
        (errors.RangeNotSatisfiable, "RANGE_INVALID", 416),
        (errors.NotFound, "NOT_FOUND", 404),
        (errors.UpstreamUnavailable, "UNAVAILABLE", 503),
        (errors.UpstreamBadGateway, "UNAVAILABLE", 502),
    ],
)
def test_error_class_code_and_status(cls: type[RegistryError], code: str, status: int) -> None:
    """Each registry error class carries its distribution-spec code and HTTP status."""
    error = cls("x")
    assert (error.code, error.status) == (code, status)


@pytest.mark.parametrize("cls", [errors.BlobUnknown, errors.Denied, errors.TooManyRequests])
def test_body_has_code_message_and_detail(cls: type[RegistryError]) -> None:
    """body() renders `{"errors":[{"code","message","detail"}]}` with the class's code and message."""
    doc = json.loads(cls({"digest": "sha256:abc"}).body())
    assert doc == {"errors": [{"code": cls.code, "message": cls.message, "detail": {"digest": "sha256:abc"}}]}


def test_body_omits_detail_when_none() -> None:
    """body() leaves out `detail` when the error was raised without one."""
    doc = json.loads(errors.ManifestUnknown().body())
    assert doc == {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}


def test_body_is_utf8_json_bytes() -> None:
    """body() returns bytes that decode as UTF-8 JSON, even for a non-ASCII detail."""
    body = errors.NameInvalid("naïve/name").body()
    assert isinstance(body, bytes)
    assert json.loads(body.decode("utf-8"))["errors"][0]["detail"] == "naïve/name"


def test_str_is_detail_or_message() -> None:
    """An error's str() is its detail when given, else its class message."""
    assert (str(errors.Denied("no pull")), str(errors.Denied())) == ("no pull", errors.Denied.message)


def test_headers_are_copied() -> None:
    """Headers given to an error are kept as an independent dict."""
    given = {"Retry-After": "3"}
    error = errors.TooManyRequests(headers=given)
    given["Retry-After"] = "99"
    assert error.headers == {"Retry-After": "3"}


def test_headers_default_empty() -> None:
    """An error raised without headers has an empty header dict."""
    assert errors.BlobUnknown().headers == {}


@pytest.mark.parametrize(
    ("kind", "upstream_code", "expected"),
    [
        ("blob", None, errors.BlobUnknown),
        ("manifest", None, errors.ManifestUnknown),
        ("tags", None, errors.NameUnknown),
        ("blob", "NAME_UNKNOWN", errors.NameUnknown),
        ("manifest", "NAME_UNKNOWN", errors.NameUnknown),
        ("manifest", "BLOB_UNKNOWN", errors.BlobUnknown),
        ("blob", "MANIFEST_UNKNOWN", errors.ManifestUnknown),
        ("blob", "DENIED", errors.BlobUnknown),
        ("manifest", "SOMETHING_ELSE", errors.ManifestUnknown),
    ],
)
def test_not_found_for(kind: str, upstream_code: str | None, expected: type[RegistryError]) -> None:
    """A 404 relays the upstream's known not-found code, else the one matching the endpoint kind."""
    assert errors.not_found_for(kind, upstream_code) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"m"}]}', "MANIFEST_UNKNOWN", id="valid"
        ),
        pytest.param(
            b'{"errors":[{"code":"DENIED"},{"code":"UNAUTHORIZED"}]}', "DENIED", id="first-of-several"
        ),
        pytest.param(b"<html>502 Bad Gateway</html>", None, id="html"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"\xff\xfe", None, id="not-utf8"),
        pytest.param(b"[1, 2]", None, id="array"),
        pytest.param(b'"errors"', None, id="string"),
        pytest.param(b"null", None, id="null"),
        pytest.param(b"{}", None, id="no-errors-key"),
        pytest.param(b'{"errors":[]}', None, id="empty-errors"),
        pytest.param(b'{"errors":"abc"}', None, id="errors-is-string"),
        pytest.param(b'{"errors":{"code":"X"}}', None, id="errors-is-object"),
        pytest.param(b'{"errors":[{"message":"m"}]}', None, id="no-code"),
        pytest.param(b'{"errors":[{"code":404}]}', None, id="non-string-code"),
        pytest.param(b'{"errors":["BLOB_UNKNOWN"]}', None, id="error-is-string"),
    ],
)
def test_upstream_error_code(body: bytes, expected: str | None) -> None:
    """The first error code of an upstream error document, or None for anything else."""
    assert errors.upstream_error_code(body) == expected
