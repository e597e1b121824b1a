"""Unit tests for mirror.access: Authorization parsing and the htpasswd and tokens file formats."""

from __future__ import annotations

import base64

import pytest

from mirror.access.credentials import Basic, Bearer, Malformed, bcrypt_password, parse_authorization
from mirror.access.files import parse_htpasswd, parse_tokens, token_digest


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        (f"Basic {_b64('alice:pw')}", Basic("alice", "pw")),
        (f"basic {_b64('alice:pa:ss')}", Basic("alice", "pa:ss")),
        (f"Basic {_b64('alice:')}", Basic("alice", "")),
        ("Bearer abc.def", Bearer("abc.def")),
    ],
)
def test_authorization_headers_parse_into_credentials(header: str | None, expected: object) -> None:
    """Basic (password may contain ':') and Bearer values parse; no header is no credentials."""
    assert parse_authorization(header) == expected


@pytest.mark.parametrize(
    "header", ["Digest x", "Basic", "Basic !!!", f"Basic {_b64('nocolon')}", f"Basic {_b64(':pw')}", "Bearer"]
)
def test_malformed_authorization_headers_are_rejected(header: str) -> None:
    """Other schemes, bad base64, a missing ':' or user, an empty token: Malformed."""
    with pytest.raises(Malformed):
        parse_authorization(header)


def test_credentials_never_show_secrets_in_repr() -> None:
    """The password and token are not in the repr (logs, tracebacks)."""
    assert "pw" not in repr(Basic("alice", "pw"))
    assert "tok" not in repr(Bearer("tok"))


def test_passwords_are_cut_at_bcrypts_72_bytes() -> None:
    """bcrypt compares at most 72 bytes, as `htpasswd -B` hashed them."""
    assert bcrypt_password("é" * 40) == ("é" * 36).encode()


def test_htpasswd_keeps_bcrypt_entries_and_names_the_others() -> None:
    """$2y$/$2b$/$2a$ entries are users; MD5 ($apr1$), SHA1 and crypt entries are skipped by name."""
    text = "# comment\n\nalice:$2y$05$abc\nbob:$2b$05$def\ncarol:$apr1$x$y\ndave:{SHA}zz\nbroken\n"
    found = parse_htpasswd(text)
    assert sorted(found.users) == ["alice", "bob"]
    assert found.skipped == ("carol", "dave")


def test_tokens_map_digests_to_names() -> None:
    """`name:token` lines: a token is looked up by its sha256, never stored."""
    found = parse_tokens("# ci\nci:0123456789abcdef0123\n")
    assert found == {token_digest("0123456789abcdef0123"): "ci"}


@pytest.mark.parametrize("line", ["ci:short", "ci", ":0123456789abcdef0123", "ci:0123456789 abcdef0123"])
def test_bad_token_lines_are_errors_naming_the_line(line: str) -> None:
    """A short token, a missing name or token, or a space in the token is a ValueError naming line 2."""
    with pytest.raises(ValueError, match="line 2"):
        parse_tokens(f"ok:0123456789abcdef0123\n{line}\n")
