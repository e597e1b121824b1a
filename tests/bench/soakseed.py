"""The soak's blobs in the upstream (issue 17, item 6): many small distinct blobs in `bench/soak`, written
once into the cached seed storage in docker-registry's own filesystem layout, next to the other content.

Tens of thousands of uploads through the API would take minutes; the layout is two files per blob (the
bytes, and the repository's link to them), which distribution reads on every request. A marker written
last says which set is complete.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from tests.bench.seed import blob_path

SOAK_NAME = "bench/soak"
SEED = 17
CACHED_SIZES = (1024, 1024 * 1024)  # the blobs warmed before the soak: 1 KiB to 1 MiB, log-uniform
COLD_SIZES = (1024, 64 * 1024)  # each fetched once, cold: 1 to 64 KiB


@dataclass(frozen=True)
class SoakBlobs:
    """Digests in `bench/soak`: `cached` are warmed before the load, `cold` requested once each."""

    cached: tuple[str, ...]
    cold: tuple[str, ...]


def _size(rng: random.Random, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return int(low * (high / low) ** rng.random())


def _write(storage: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(storage, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    hex_digest = digest.removeprefix("sha256:")
    link = storage / "docker/registry/v2/repositories" / SOAK_NAME / "_layers/sha256" / hex_digest / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)
    return digest


def ensure_soak_blobs(storage: Path, cached: int, cold: int) -> SoakBlobs:
    """`cached` + `cold` blobs of seeded random bytes under `storage`, made now unless made before."""
    marker = storage.parent / f"soak-{SEED}-{cached}-{cold}.json"
    if marker.is_file():
        raw = json.loads(marker.read_text())
        return SoakBlobs(tuple(raw["cached"]), tuple(raw["cold"]))
    rng = random.Random(SEED)
    made = SoakBlobs(
        tuple(_write(storage, rng.randbytes(_size(rng, CACHED_SIZES))) for _ in range(cached)),
        tuple(_write(storage, rng.randbytes(_size(rng, COLD_SIZES))) for _ in range(cold)),
    )
    partial = marker.with_suffix(".partial")
    partial.write_text(json.dumps({"cached": made.cached, "cold": made.cold}))
    partial.rename(marker)
    return made
