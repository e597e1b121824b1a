"""Pinned images: warmed into the cache at start-up (in the background) and never evicted.

The digests a pin resolved to (index, platform manifests, configs, layers) are kept in `pins.json` in the
cache directory, so they stay protected across restarts even before the next warm-up has run.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from pathlib import Path

import structlog

from mirror import errors, oci
from mirror.proxy import RegistryProxy
from mirror.routing import Router

log = structlog.get_logger("mirror.pins")


async def warm_image(
    proxy: RegistryProxy, name: str, reference: str, platforms: frozenset[str] | None, digests: set[str]
) -> None:
    """Pull an image into the cache (every platform in `platforms`, None for all), adding each digest
    to `digests` before its blob is fetched, so a pin protects it from the moment it lands."""
    top = (await proxy.manifest(name, reference, [])).manifest
    manifests = [top]
    if top.media_type in oci.INDEX_TYPES:
        for child in oci.select_children(top.body, platforms):
            manifests.append((await proxy.manifest(name, child, [])).manifest)
    digests.update(m.digest for m in manifests)
    for manifest in manifests:
        for blob in oci.blob_digests(manifest.body):
            digests.add(blob)
            await proxy.ensure_blob(name, blob)


class Pins:
    """The configured pins and the digests they hold."""

    def __init__(self, refs: Iterable[str], path: Path, platforms: frozenset[str] | None) -> None:
        self.refs = tuple(refs)
        self._path = path
        self._platforms = platforms
        self._digests: dict[str, list[str]] = {}
        self._warming: set[str] = set()

    def load(self) -> None:
        """Read the digests recorded by the last warm-up (blocking: run in a thread)."""
        try:
            recorded = json.loads(self._path.read_text())
        except (OSError, ValueError):
            recorded = {}
        if isinstance(recorded, dict):
            self._digests = {
                r: list(d) for r, d in recorded.items() if r in self.refs and isinstance(d, list)
            }

    def digests(self) -> frozenset[str]:
        """Every digest held by a pin: never evicted."""
        return frozenset(d for found in self._digests.values() for d in found) | self._warming

    async def warm(self, router: Router, proxies: dict[str, RegistryProxy]) -> None:
        """Warm every pin; a pin that fails is logged and keeps its previous digests."""
        for text in self.refs:
            ref = oci.parse_image_ref(text)
            target = router.route(ref.name, ref.registry)
            found: set[str] = set()
            self._warming = found
            try:
                await warm_image(proxies[target.upstream], target.name, ref.reference, self._platforms, found)
            except errors.RegistryError as exc:
                log.warning("pin_warm_failed", image=text, code=exc.code, detail=str(exc.detail))
                continue
            finally:
                self._warming = set()
            self._digests[text] = sorted(found)
            await asyncio.to_thread(self._save)
            log.info("pin_warmed", image=text, digests=len(found))

    def _save(self) -> None:
        temp = self._path.with_suffix(".tmp")
        temp.write_text(json.dumps(self._digests, indent=1))
        os.replace(temp, self._path)
