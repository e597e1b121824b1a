"""Content digests for test data."""

from __future__ import annotations

import hashlib


def sha256(data: bytes) -> str:
    """`sha256:<hex>` of `data`, as registries name content."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
