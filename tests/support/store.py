"""Filling a blob store directly, through its own API (no mirror, no upstream)."""

from __future__ import annotations

import os

from mirror.storage.blobs import BlobStore
from tests.support.digests import sha256


def put_blob(store: BlobStore, data: bytes) -> str:
    """Commit `data` into `store` the way a fill does (temp file, then commit); its digest. Blocking."""
    digest = sha256(data)
    file, path, read_fd = store.open_temp(digest)
    with file:
        file.write(data)
    os.close(read_fd)
    store.commit(digest, path, len(data))
    return digest
