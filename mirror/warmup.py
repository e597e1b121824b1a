"""Pin warm-up: at start-up, pull every pinned image into the cache (in the background)."""

from __future__ import annotations

import asyncio

import structlog

from mirror import errors, oci
from mirror.proxy import RegistryProxy
from mirror.storage.pins import PinRecord
from mirror.upstream.router import Router

log = structlog.get_logger("mirror.warmup")


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


async def warm_pins(
    pins: PinRecord, router: Router, proxies: dict[str, RegistryProxy], platforms: frozenset[str] | None
) -> None:
    """Warm every pin; a pin that fails is logged and keeps its previous digests."""
    for text in pins.refs:
        ref = oci.parse_image_ref(text)
        target = router.route(ref.name, ref.registry)
        found: set[str] = set()
        pins.warming(found)
        try:
            await warm_image(proxies[target.upstream], target.name, ref.reference, platforms, found)
        except errors.RegistryError as exc:
            pins.abandon()
            log.warning("pin_warm_failed", image=text, code=exc.code, detail=str(exc.detail))
            continue
        await asyncio.to_thread(pins.record, text, found)
        log.info("pin_warmed", image=text, digests=len(found))
