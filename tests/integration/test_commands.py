"""`mirror cache ...` and `mirror warm` against the mirror app in-process and the fake upstream.

The commands are synchronous (they own their event loop, if any), so they run in a thread here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mirror import cli, keys
from mirror.oci import OCI_INDEX
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.digests import sha256
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
PIN = "docker.io/library/app:1"
CONFIG = f'pins = ["{PIN}"]\n'


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every command without MIRROR_* variables from the developer's or CI's environment."""
    for name in list(os.environ):
        if name.upper().startswith("MIRROR_"):
            monkeypatch.delenv(name)


def blob(fake: FakeUpstream, seed: int, size: int = 10_000) -> str:
    return fake.add_blob(random.Random(seed).randbytes(size))


async def pull(mirror: Client, *digests: str) -> None:
    """Pull blobs through the mirror one after the other, so their access times are in this order."""
    for digest in digests:
        await (await mirror.get(f"/v2/library/x/blobs/{digest}")).read()
        await eventually(functools.partial(stored, mirror, digest))


def cache_dir(mirror: Client) -> str:
    return str(mirror.app[keys.SETTINGS].cache_dir)


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run `mirror ARGV...` in a thread; its exit status and stdout."""
    capsys.readouterr()
    status = await asyncio.to_thread(cli.main, list(argv))
    return status, capsys.readouterr().out


async def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    status, out = await run(capsys, *argv, "--json")
    return status, json.loads(out)


def with_pins(mirror: Client, tmp_path: Path) -> tuple[str, ...]:
    """Options naming the mirror's cache dir and the config file `make_mirror(CONFIG)` wrote."""
    return ("--cache-dir", cache_dir(mirror), "--config", str(tmp_path / "mirror.toml"))


async def write_pins(mirror: Client, *digests: str) -> None:
    path = Path(cache_dir(mirror)) / "pins.json"
    await asyncio.to_thread(path.write_text, json.dumps({PIN: list(digests)}))


async def test_stats_counts_blobs_and_bytes(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache stats --json` after two pulls reports 2 entries, their bytes, the limit and access times."""
    a, b = blob(fake, 1, 1000), blob(fake, 2, 3000)
    await pull(mirror, a, b)
    status, doc = await run_json(capsys, "cache", "stats", "--cache-dir", cache_dir(mirror))
    assert status == 0
    assert (doc["entries"], doc["size_bytes"], doc["pinned_entries"]) == (2, 4000, 0)
    assert doc["disk_bytes"] > 4000
    assert doc["limit_bytes"] == mirror.app[keys.SETTINGS].cache_max_bytes
    assert doc["oldest_access"] <= doc["newest_access"]


async def test_ls_lists_least_recently_used_first(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache ls --json` lists every blob with its size, least recently used first."""
    a, b = blob(fake, 1, 1000), blob(fake, 2, 3000)
    await pull(mirror, b, a)
    status, doc = await run_json(capsys, "cache", "ls", "--cache-dir", cache_dir(mirror))
    assert status == 0
    assert [(e["digest"], e["size"]) for e in doc["blobs"]] == [(b, 3000), (a, 1000)]


async def test_ls_sorts_by_size_and_marks_pins(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache ls --sort size` puts the largest first, and the human output marks a pinned blob."""
    mirror = await make_mirror(CONFIG)
    a, b = blob(fake, 1, 1000), blob(fake, 2, 3000)
    await pull(mirror, a, b)
    await write_pins(mirror, a)
    status, out = await run(capsys, "cache", "ls", "--sort", "size", *with_pins(mirror, tmp_path))
    lines = out.splitlines()
    assert status == 0
    assert [line.split()[0] for line in lines] == [b, a]
    assert lines[1].endswith("pinned")
    assert not lines[0].endswith("pinned")


async def test_rm_removes_stored_blobs_and_fails_for_unknown_ones(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache rm` removes a stored blob and exits 1 naming a digest that was not stored."""
    a, b = blob(fake, 1), blob(fake, 2)
    await pull(mirror, a)
    status, out = await run(capsys, "cache", "rm", a, b, "--cache-dir", cache_dir(mirror))
    assert status == 1
    assert out.startswith(f"removed {a}")
    assert not await stored(mirror, a)


async def test_rm_of_a_pinned_blob_needs_force(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache rm` refuses a pinned blob (exit 1, still stored) unless given --force."""
    mirror = await make_mirror(CONFIG)
    a = blob(fake, 1)
    await pull(mirror, a)
    await write_pins(mirror, a)
    assert (await run(capsys, "cache", "rm", a, *with_pins(mirror, tmp_path)))[0] == 1
    assert await stored(mirror, a)
    assert (await run(capsys, "cache", "rm", a, "--force", *with_pins(mirror, tmp_path)))[0] == 0
    assert not await stored(mirror, a)


async def test_prune_evicts_least_recently_used_and_spares_pins(
    fake: FakeUpstream, make_mirror: MirrorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache prune --to` evicts LRU first, skips the pinned oldest blob, and stops at the target."""
    mirror = await make_mirror(CONFIG)
    pinned, a, b, c = (blob(fake, seed) for seed in range(4))
    await pull(mirror, pinned, a, b, c)
    await write_pins(mirror, pinned)
    argv = ("cache", "prune", *with_pins(mirror, tmp_path))
    target = str(40_000 - 15_000)
    _, planned = await run_json(capsys, *argv, "--to", target, "--dry-run")
    status, done = await run_json(capsys, *argv, "--to", target)
    assert status == 0
    assert [e["digest"] for e in planned["evicted"]] == [e["digest"] for e in done["evicted"]] == [a, b]
    assert (done["evicted_count"], done["evicted_bytes"], done["size_after_bytes"]) == (2, 20_000, 20_000)
    assert [await stored(mirror, d) for d in (pinned, a, b, c)] == [True, False, False, True]


async def test_prune_dry_run_removes_nothing(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache prune --dry-run` reports what it would evict and leaves every blob stored."""
    a, b = blob(fake, 1), blob(fake, 2)
    await pull(mirror, a, b)
    status, out = await run(
        capsys, "cache", "prune", "--to", "0", "--dry-run", "--cache-dir", cache_dir(mirror)
    )
    assert status == 0
    assert "would prune 2 blobs" in out
    assert [await stored(mirror, d) for d in (a, b)] == [True, True]


async def test_verify_drops_a_blob_with_a_flipped_byte(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache verify` finds a blob with one byte flipped on disk, drops it, keeps the intact one, exits 1."""
    good, bad = blob(fake, 1), blob(fake, 2)
    await pull(mirror, good, bad)
    await asyncio.to_thread(flip_byte, mirror, bad)
    status, out = await run(capsys, "cache", "verify", "--cache-dir", cache_dir(mirror))
    assert status == 1
    assert out.splitlines() == [f"corrupt {bad}: dropped", "verified 2 blobs (19.5 KiB): 1 corrupt dropped"]
    assert [await stored(mirror, d) for d in (good, bad)] == [True, False]


async def test_verify_of_an_intact_cache_exits_0(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache verify --json` over intact blobs reports them all verified and nothing corrupt."""
    await pull(mirror, blob(fake, 1), blob(fake, 2))
    status, doc = await run_json(capsys, "cache", "verify", "--cache-dir", cache_dir(mirror))
    assert status == 0
    assert (doc["verified"], doc["verified_bytes"], doc["corrupt"]) == (2, 20_000, [])


def flip_byte(mirror: Client, digest: str) -> None:
    """Flip the first byte of a stored blob's file (blocking: run in a thread)."""
    found = mirror.app[keys.STORE].open(digest)
    assert found is not None
    path = Path(found.file.name)
    found.close()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def add_index(fake: FakeUpstream, name: str, tag: str, children: dict[str, str]) -> None:
    """An OCI index under NAME:TAG whose children (platform → manifest digest) the fake already serves."""
    entries = [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": len(fake.manifests[(name, digest)][0]),
            "platform": {"os": platform.split("/")[0], "architecture": platform.split("/")[1]},
        }
        for platform, digest in children.items()
    ]
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    fake.manifests[(name, tag)] = (body, OCI_INDEX)
    fake.manifests[(name, sha256(body))] = (body, OCI_INDEX)


def table_rows(out: str) -> list[str]:
    """The summary table's rows from captured stdout, which the in-process mirror's logs share."""
    return [line for line in out.splitlines() if line.startswith("docker.io/")]


def mirror_url(mirror: Client) -> str:
    return str(mirror.make_url("")).rstrip("/")


async def test_warm_fills_the_cache_and_a_second_warm_sends_nothing_upstream(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`warm` pulls an image's blobs into the mirror; warming it again sends no request upstream."""
    layers = [blob(fake, 1), blob(fake, 2)]
    fake.add_manifest("library/app", "1", layers)
    status, out = await run(capsys, "warm", "app:1", "--mirror", mirror_url(mirror))
    assert status == 0
    assert table_rows(out)[0].startswith("docker.io/library/app:1 ")
    assert table_rows(out)[0].endswith("ok")
    for digest in layers:
        await eventually(functools.partial(stored, mirror, digest))
    seen = len(fake.seen)
    assert (await run(capsys, "warm", "app:1", "--mirror", mirror_url(mirror)))[0] == 0
    assert len(fake.seen) == seen


async def test_warm_fetches_only_the_chosen_platform(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`warm --platform linux/arm64` of an index fetches the arm64 child's blobs and none of amd64's."""
    amd64, arm64 = blob(fake, 1), blob(fake, 2)
    children = {
        "linux/amd64": fake.add_manifest("library/multi", "amd64", [amd64]),
        "linux/arm64": fake.add_manifest("library/multi", "arm64", [arm64]),
    }
    add_index(fake, "library/multi", "latest", children)
    url = mirror_url(mirror)
    status, out = await run(capsys, "warm", "multi", "--platform", "linux/arm64", "--mirror", url)
    assert status == 0
    assert "linux/arm64" in table_rows(out)[0]
    assert fake.requests("GET", f"/blobs/{arm64}")
    assert not fake.requests("GET", f"/blobs/{amd64}")
    assert not fake.requests("GET", f"/manifests/{children['linux/amd64']}")


async def test_warm_reports_the_registry_error_code_and_exits_1(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image the upstream does not have fails with MANIFEST_UNKNOWN; the others still warm."""
    fake.add_manifest("library/app", "1", [blob(fake, 1)])
    status, out = await run(capsys, "warm", "nope:1", "app:1", "--mirror", mirror_url(mirror))
    rows = table_rows(out)
    assert status == 1
    assert "error MANIFEST_UNKNOWN" in rows[0]
    assert rows[1].endswith("ok")


async def test_warm_fails_an_image_whose_blob_is_cut_off(
    fake: FakeUpstream, mirror: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """A blob the mirror cuts off (the upstream sent wrong bytes, too many to be read with the headers)
    fails that image with exit 1."""
    bad = blob(fake, 1, size=300_000)
    fake.faults[bad] = "wrong_bytes"
    fake.add_manifest("library/app", "1", [bad])
    status, out = await run(capsys, "warm", "app:1", "--mirror", mirror_url(mirror))
    assert status == 1
    assert "error INCOMPLETE" in table_rows(out)[0]


async def test_warm_checks_blob_digests_itself(
    fake: FakeUpstream, aiohttp_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server answering 200 with other bytes than the digest names fails the image (DIGEST_MISMATCH)."""
    layer = blob(fake, 1)
    fake.add_manifest("library/app", "1", [layer])
    fake.blobs[layer] = b"not the layer"
    server: TestServer = await aiohttp_server(fake.app())
    status, out = await run(capsys, "warm", "app:1", "--mirror", str(server.make_url("")))
    assert status == 1
    assert "error DIGEST_MISMATCH" in table_rows(out)[0]
