"""`mirror warm IMAGE...`: fill a running mirror's cache ahead of a rollout by pulling through it.

Each image is pulled over HTTP as a client pulls it: its manifest, the manifests of the chosen platforms
when it is an index, then every config and layer blob, read and discarded. The mirror fetches, verifies
and stores what it lacks; this command checks every body against its digest as well.
Exit codes: 0 every image warmed, 1 some image failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from tqdm import tqdm

from mirror import __version__, oci, values
from mirror.commands.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, SubParsers, argument_type, human_size
from mirror.config import ConfigError, load
from mirror.oci import DOCKER_IO

DEFAULT_MIRROR = "http://127.0.0.1:5000"
CHUNK = 256 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
HEADERS = {"User-Agent": f"mirror-warm/{__version__}"}
MANIFEST_ACCEPT = {"Accept": ", ".join(oci.MANIFEST_TYPES)}

T = TypeVar("T")


class WarmError(Exception):
    """Pulling an image failed: `code` is the registry error code, or UNREACHABLE, TIMEOUT, ...."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass
class Result:
    """What warming one image did."""

    image: str
    platforms: list[str] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: WarmError | None = None


@dataclass(frozen=True, slots=True)
class MirrorRepo:
    """How to ask the mirror for a repository: its name, and containerd's `ns` for registries other than
    Docker Hub (which, unlike a path prefix, works for hosts with a port too)."""

    name: str
    ns: str | None

    def url(self, base: str, endpoint: str, reference: str) -> str:
        query = f"?ns={self.ns}" if self.ns else ""
        return f"{base}/v2/{self.name}/{endpoint}/{reference}{query}"


def mirror_path(ref: oci.ImageRef) -> MirrorRepo:
    """The repository to ask the mirror for: by plain name for Docker Hub, with `ns` otherwise."""
    return MirrorRepo(ref.name, None if ref.registry == DOCKER_IO else ref.registry)


def choose_platforms(flag: Sequence[str] | None, configured: Sequence[str]) -> frozenset[str] | None:
    """The platforms to warm: `--platform` if given, else the config's; None means all."""
    return oci.platform_filter(list(flag if flag is not None else configured))


def error_from(status: int, body: bytes) -> WarmError:
    """A registry error document's first code and message, or the bare HTTP status."""
    try:
        first = json.loads(body)["errors"][0]
        return WarmError(str(first["code"]), str(first.get("message", "")))
    except (ValueError, KeyError, IndexError, TypeError):
        return WarmError(f"HTTP_{status}", body[:200].decode(errors="replace"))


def descriptor_sizes(manifest: bytes) -> dict[str, int]:
    """Config and layer digests of an image manifest with the sizes it declares (0 when it declares none)."""
    digests = oci.blob_digests(manifest)
    try:
        doc = json.loads(manifest)
        layers = doc.get("layers") or []
        entries = [doc.get("config"), *layers]
        declared = {e["digest"]: int(e.get("size", 0)) for e in entries if isinstance(e, dict)}
    except (ValueError, TypeError, KeyError, AttributeError):
        declared = {}
    return {digest: max(declared.get(digest, 0), 0) for digest in digests}


def index_platforms(index: bytes) -> dict[str, str]:
    """The platform (os/arch, or os/arch/variant) of each manifest an index lists, by digest."""
    try:
        entries = json.loads(index).get("manifests") or []
        return {
            e["digest"]: oci.platform_names(e["platform"])[-1]
            for e in entries
            if isinstance(e, dict) and isinstance(e.get("platform"), dict)
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def matches(digest: str, body: bytes) -> bool:
    """Whether `body` hashes to `digest`."""
    algorithm, _, expected = digest.partition(":")
    return hashlib.new(algorithm, body).hexdigest() == expected


def summary_table(results: Iterable[Result]) -> str:
    """The end-of-run table: image, platforms, blobs, bytes, seconds, then ok or the error."""
    rows = [["IMAGE", "PLATFORMS", "BLOBS", "BYTES", "SECONDS"]]
    outcomes = ["RESULT"]
    for r in results:
        rows.append(
            [r.image, ",".join(r.platforms) or "-", str(r.blobs), human_size(r.bytes), f"{r.seconds:.1f}"]
        )
        outcomes.append("ok" if r.error is None else f"error {r.error}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=True)), outcome])
        for row, outcome in zip(rows, outcomes, strict=True)
    )


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    """Turn client exceptions into a WarmError naming what failed."""
    try:
        yield
    except TimeoutError:
        raise WarmError("TIMEOUT", f"no answer from {url}") from None
    except aiohttp.ClientPayloadError as exc:
        raise WarmError("INCOMPLETE", f"{url}: the body broke off: {exc}") from None
    except aiohttp.ClientError as exc:
        raise WarmError("UNREACHABLE", f"{url}: {exc}") from None


async def caught(work: Awaitable[T]) -> T | WarmError:
    """The result of `work`, or the WarmError it raised."""
    try:
        return await work
    except WarmError as exc:
        return exc


async def every(works: Iterable[Awaitable[T]]) -> list[T]:
    """Run all of `works` to completion (none is abandoned); then the first WarmError, if any, is raised."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(caught(w)) for w in works]
    results = [t.result() for t in tasks]
    for result in results:
        if isinstance(result, WarmError):
            raise result
    return [r for r in results if not isinstance(r, WarmError)]


class Puller:
    """Pulls images through the mirror on one session, at most `concurrency` requests at a time."""

    def __init__(self, session: aiohttp.ClientSession, base: str, concurrency: int) -> None:
        self._session = session
        self._base = base.rstrip("/")
        self._limit = asyncio.Semaphore(concurrency)

    async def manifest(self, path: MirrorRepo, reference: str) -> tuple[bytes, str]:
        """A manifest's body and media type; a manifest asked by digest must match it."""
        url = path.url(self._base, "manifests", reference)
        with translated(url):
            async with self._limit, self._session.get(url, headers=MANIFEST_ACCEPT) as resp:
                body = await resp.read()  # the mirror never serves a manifest over MAX_MANIFEST_BYTES
                if resp.status != 200:
                    raise error_from(resp.status, body)
                media_type = oci.sniff_media_type(body, resp.headers.get("Content-Type"))
        if oci.is_digest(reference) and not matches(reference, body):
            raise WarmError("DIGEST_MISMATCH", f"manifest {reference} has other content")
        return body, media_type

    async def blob(self, path: MirrorRepo, digest: str, progress: Callable[[int], object]) -> int:
        """Read a blob to the end, checking its digest; its size."""
        url = path.url(self._base, "blobs", digest)
        hasher = oci.Digest.parse(digest).hasher()
        received = 0
        with translated(url):
            async with self._limit, self._session.get(url) as resp:
                if resp.status != 200:
                    raise error_from(resp.status, await resp.read())
                async for chunk in resp.content.iter_chunked(CHUNK):
                    hasher.update(chunk)
                    received += len(chunk)
                    progress(len(chunk))
        if f"{digest.partition(':')[0]}:{hasher.hexdigest()}" != digest:
            raise WarmError("DIGEST_MISMATCH", f"blob {digest} has other content")
        return received

    async def images_manifests(
        self, path: MirrorRepo, reference: str, platforms: frozenset[str] | None
    ) -> tuple[list[bytes], list[str]]:
        """The image manifests to warm (the chosen children of an index) and their platforms."""
        body, media_type = await self.manifest(path, reference)
        if media_type not in oci.INDEX_TYPES:
            return [body], []
        children = oci.select_children(body, platforms)
        if not children:
            wanted = ",".join(sorted(platforms or ())) or "any platform"
            raise WarmError("NO_MATCHING_PLATFORM", f"the index has no manifest for {wanted}")
        found = await every(self.manifest(path, child) for child in children)
        names = index_platforms(body)
        return [child_body for child_body, _ in found], [names.get(c, "?") for c in children]

    async def image(self, ref: oci.ImageRef, platforms: frozenset[str] | None, bar: tqdm[Any]) -> Result:
        """Warm one image; failures are recorded in the result, not raised."""
        started, path = time.monotonic(), mirror_path(ref)
        result = Result(str(ref))
        try:
            manifests, result.platforms = await self.images_manifests(path, ref.reference, platforms)
            sizes: dict[str, int] = {}
            for manifest in manifests:
                sizes.update(descriptor_sizes(manifest))
            bar.reset(total=sum(sizes.values()))
            received = await every(self.blob(path, digest, bar.update) for digest in sizes)
            result.blobs, result.bytes = len(received), sum(received)
        except WarmError as exc:
            result.error = exc
        result.seconds = time.monotonic() - started
        return result


async def warm(
    base: str,
    refs: Sequence[oci.ImageRef],
    platforms: frozenset[str] | None,
    concurrency: int,
    show_progress: bool,
) -> list[Result]:
    """Warm every image in turn, each with its own progress bar."""
    results: list[Result] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT, headers=HEADERS, auto_decompress=False) as session:
        puller = Puller(session, base, concurrency)
        for ref in refs:
            options: dict[str, Any] = {"unit": "B", "unit_scale": True, "unit_divisor": 1024}
            with tqdm(desc=str(ref), file=sys.stderr, disable=not show_progress, **options) as bar:
                results.append(await puller.image(ref, platforms, bar))
    return results


def run(args: argparse.Namespace) -> int:
    """`mirror warm`: the summary table on stdout; 1 if any image failed."""
    try:
        settings = load({}, os.environ, args.config)
    except ConfigError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_USAGE
    platforms = choose_platforms(args.platform, settings.platforms)
    # tqdm makes its lock on first use, importing multiprocessing (blocking): not inside the event loop.
    tqdm.get_lock()  # type: ignore[no-untyped-call]  # types-tqdm leaves it unannotated
    results = asyncio.run(warm(args.mirror, args.images, platforms, args.concurrency, sys.stderr.isatty()))
    print(summary_table(results))
    return EXIT_OK if all(r.error is None for r in results) else EXIT_PROBLEM


def add_parser(sub: SubParsers) -> None:
    """Add `warm` to the top-level subparsers."""
    text = "fill the cache of a running mirror by pulling images through it"
    warm_parser = sub.add_parser("warm", help=text, description=text)
    warm_parser.add_argument("images", nargs="+", metavar="IMAGE", type=argument_type(oci.parse_image_ref))
    warm_parser.add_argument(
        "--mirror",
        default=DEFAULT_MIRROR,
        type=argument_type(values.http_url),
        metavar="URL",
        help=f"base URL of the running mirror (default {DEFAULT_MIRROR})",
    )
    warm_parser.add_argument(
        "--platform",
        type=argument_type(values.platform_list),
        metavar="OS/ARCH",
        help="os/arch[/variant][,...] or all (default: the config's platforms, this host's)",
    )
    warm_parser.add_argument(
        "--concurrency",
        type=argument_type(values.positive_count),
        default=4,
        metavar="N",
        help="requests at a time (default 4)",
    )
    warm_parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML config file (env MIRROR_CONFIG)"
    )
