"""What a client's `Authorization` header carries: pure parsing, no checking."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

#: bcrypt reads at most 72 bytes of a password (`htpasswd -B` hashed no more); longer ones are cut there.
BCRYPT_MAX_PASSWORD = 72


class Malformed(ValueError):
    """An Authorization header that is neither valid Basic nor Bearer credentials."""


@dataclass(frozen=True)
class Basic:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Bearer:
    token: str = field(repr=False)


Credentials = Basic | Bearer


def parse_authorization(value: str | None) -> Credentials | None:
    """The credentials in an Authorization header value; None when there is none. Raises Malformed."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer" and rest:
        return Bearer(rest)
    if scheme.lower() != "basic" or not rest:
        raise Malformed("expected Basic or Bearer credentials")
    try:
        decoded = base64.b64decode(rest, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Malformed("Basic credentials are not base64 of UTF-8 user:password") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise Malformed("Basic credentials lack user:password")
    return Basic(user, password)


def bcrypt_password(password: str) -> bytes:
    """The bytes bcrypt compares: UTF-8, cut at 72 bytes as bcrypt itself always did."""
    return password.encode("utf-8")[:BCRYPT_MAX_PASSWORD]
