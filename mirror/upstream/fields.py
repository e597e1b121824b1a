"""Values the upstream sends, parsed totally: every input gives a value or an upstream error, never an
exception a caller did not expect.

Whatever an upstream writes in a header or a token document is the upstream's fault when it is wrong:
these parsers blame it (`UpstreamBadGateway`, 502; stale serving on revalidation) and never the client
(400) or the mirror (500).
"""

from __future__ import annotations

import math

from yarl import URL

from mirror import errors, oci

#: Digits of a Content-Length beyond which it cannot be a real blob (10^19 bytes is 8 EiB).
MAX_LENGTH_DIGITS = 19
#: The longest token lifetime believed; longer ones (or infinite ones) are cut to this.
MAX_TOKEN_LIFETIME = 24 * 3600.0


def content_length(value: str | None) -> int | None:
    """A `Content-Length` as a number of bytes, or None when absent or not plain ASCII digits.

    `str.isdigit` admits `²` and other digits `int` refuses; an unreadable length is treated as none
    (the body is then read to its end and checked by size and digest as always)."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > MAX_LENGTH_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """A `Content-Range: bytes first-last/size` as (first, last + 1, size or None for `*`); None when
    absent or unreadable (a side stream then takes the answer for one it did not ask for)."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition(" ")
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    numbers = (first, last) if total == "*" else (first, last, total)
    if unit != "bytes" or not all(
        n.isascii() and n.isdigit() and len(n) <= MAX_LENGTH_DIGITS for n in numbers
    ):
        return None
    return int(first), int(last) + 1, None if total == "*" else int(total)


def digest(value: str | None, what: str = "Docker-Content-Digest") -> str | None:
    """The digest an upstream header announces, or None when absent; a malformed one is the
    upstream's error, not the client's."""
    if value is None or not value.strip():
        return None
    try:
        return str(oci.Digest.parse(value.strip()))
    except errors.DigestInvalid:
        raise errors.UpstreamBadGateway(f"upstream sent a malformed {what} {value[:100]!r}") from None


def redirect_target(current: URL, location: str) -> URL:
    """Where a redirect's `Location` points, resolved against `current`; an unusable one (another scheme,
    no host, a port outside 1-65535, unparsable) is an upstream error."""
    try:
        target = current.join(URL(location, encoded=True))
    except (ValueError, TypeError) as exc:
        raise errors.UpstreamBadGateway(f"upstream redirected to an unusable URL: {exc}") from None
    return _usable(target, "redirected to", location)


def http_url(text: str, what: str) -> URL:
    """An absolute http(s) URL the upstream gave (a token realm), or an upstream error."""
    try:
        url = URL(text)
    except (ValueError, TypeError):
        url = URL()
    if not url.is_absolute():
        raise errors.UpstreamBadGateway(f"unusable {what} {text[:200]!r}")
    return _usable(url, f"sent a {what} of", text)


def _usable(url: URL, verb: str, text: str) -> URL:
    if url.scheme not in ("http", "https"):
        raise errors.UpstreamBadGateway(f"upstream {verb} a {url.scheme!r} URL")
    try:
        port, host = url.port, url.raw_host
    except ValueError:
        port, host = None, None
    if not host or port is None or not 0 < port < 65536:
        raise errors.UpstreamBadGateway(f"upstream {verb} an unusable URL {text[:200]!r}")
    return url


def lifetime(expires_in: object, default: float) -> float:
    """A token's lifetime in seconds: `default` when absent or unusable (not a positive finite number,
    a boolean, a string), at most MAX_TOKEN_LIFETIME."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return default
    try:
        seconds = float(expires_in)
    except OverflowError:  # an integer too big for a float: 10^400
        return MAX_TOKEN_LIFETIME
    if math.isnan(seconds) or seconds <= 0:
        return default
    return min(seconds, MAX_TOKEN_LIFETIME)
