"""The credential files an operator gives: htpasswd (bcrypt entries) and static bearer tokens. Pure
parsers of their text; reading and reloading is the guard's."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

#: Hash prefixes of bcrypt, what `htpasswd -B` writes ($2y$) and other tools ($2a$, $2b$).
BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")


@dataclass(frozen=True)
class Htpasswd:
    """Users and their bcrypt hashes; `skipped` names entries of other hash kinds (MD5, SHA1, crypt),
    which are never accepted."""

    users: dict[str, bytes] = field(default_factory=dict, repr=False)
    skipped: tuple[str, ...] = ()


def parse_htpasswd(text: str) -> Htpasswd:
    """`user:hash` lines; blank lines and `#` comments ignored."""
    users: dict[str, bytes] = {}
    skipped: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            continue
        if hashed.startswith(BCRYPT_PREFIXES):
            users[user] = hashed.encode("ascii", errors="replace")
        else:
            skipped.append(user)
    return Htpasswd(users, tuple(skipped))


def token_digest(token: str) -> bytes:
    """How a token is looked up: its sha256, so the table holds no token and lookups take equal time."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens(text: str) -> dict[bytes, str]:
    """`name:token` lines (a token is any text without spaces, at least 16 characters) → name by digest.

    Raises ValueError naming the line of a bad entry: a short token is a mistake worth stopping for.
    """
    found: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep or not name or len(token) < MIN_TOKEN_LENGTH or " " in token:
            raise ValueError(
                f"line {number}: expected name:token with a token of {MIN_TOKEN_LENGTH}+ characters"
            )
        found[token_digest(token)] = name
    return found


#: Shorter static tokens are guessable; 16 characters of a random token are ~95 bits.
MIN_TOKEN_LENGTH = 16
