"""Unit tests for mirror.cluster.peerauth: peer requests signed with the shared secret, bounded in time."""

from __future__ import annotations

import pytest

from mirror.cluster.peerauth import MAX_SKEW, sign, verify

SECRET = "a-peer-secret-of-some-length"
PATH = "/_mirror/peer/blobs/sha256:" + "a" * 64
NOW = 1_800_000_000.0


def test_a_signed_request_verifies() -> None:
    """A header made by sign() for a request verifies for that request."""
    header = sign(SECRET, "GET", PATH, "bytes=10-", NOW)
    assert verify(SECRET, header, "GET", PATH, "bytes=10-", NOW)


def test_the_header_does_not_carry_the_secret() -> None:
    """The secret itself never travels: the header holds a timestamp and an HMAC."""
    assert SECRET not in sign(SECRET, "GET", PATH, "", NOW)


@pytest.mark.parametrize(
    ("method", "path", "range_header", "secret"),
    [
        ("HEAD", PATH, "", SECRET),
        ("GET", PATH.replace("a", "b"), "", SECRET),
        ("GET", PATH, "bytes=0-", SECRET),
        ("GET", PATH, "", "another-secret-of-some-length"),
    ],
    ids=["method", "path", "range", "secret"],
)
def test_a_signature_is_bound_to_its_request_and_secret(
    method: str, path: str, range_header: str, secret: str
) -> None:
    """A signature does not verify for another method, path, Range or secret."""
    header = sign(SECRET, "GET", PATH, "", NOW)
    assert not verify(secret, header, method, path, range_header, NOW)


@pytest.mark.parametrize("offset", [-MAX_SKEW - 1, MAX_SKEW + 1])
def test_a_signature_expires_either_side_of_the_clock(offset: float) -> None:
    """A signature made more than MAX_SKEW seconds away from now is refused (bounds replay)."""
    header = sign(SECRET, "GET", PATH, "", NOW + offset)
    assert not verify(SECRET, header, "GET", PATH, "", NOW)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc,sig=00", "t=1800000000", "sig=00"])
def test_malformed_headers_are_refused(header: str | None) -> None:
    """Missing or malformed credentials never verify (and never raise)."""
    assert not verify(SECRET, header, "GET", PATH, "", NOW)
