"""Credentials of peer requests: an HMAC-SHA256, over the request and a timestamp, keyed with the
shared `peer_secret`, which itself never leaves the replica (pure).

The header `X-Mirror-Peer: t=<unix seconds>,sig=<hex>` signs the method, path and Range of the
request with its time; a signature older or newer than `MAX_SKEW` is refused, so a recorded request
can be replayed only briefly, and only to get the same blob bytes again.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Mirror-Peer"
#: Seconds a signature is valid either side of the receiver's clock: covers clock skew between nodes
#: (NTP keeps them well within) and bounds replay.
MAX_SKEW = 30.0


def _mac(secret: str, method: str, path: str, range_header: str, stamp: int) -> str:
    message = f"{method.upper()}\n{path}\n{range_header}\n{stamp}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path: str, range_header: str, now: float) -> str:
    """The header value authenticating this request at `now`."""
    stamp = int(now)
    return f"t={stamp},sig={_mac(secret, method, path, range_header, stamp)}"


def verify(secret: str, header: str | None, method: str, path: str, range_header: str, now: float) -> bool:
    """Whether `header` is a valid signature of this request, made within MAX_SKEW of `now`."""
    if not header:
        return False
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    stamp, sig = fields.get("t", ""), fields.get("sig", "")
    if not stamp.isdigit() or len(stamp) > 12 or abs(now - int(stamp)) > MAX_SKEW:
        return False
    return hmac.compare_digest(sig, _mac(secret, method, path, range_header, int(stamp)))
