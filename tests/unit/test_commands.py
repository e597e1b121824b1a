"""Unit tests for the pure parts of `mirror cache` and `mirror warm`, and their usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirror import cli
from mirror.commands.cache import sort_entries, stats_doc, target_size
from mirror.commands.common import human_age, human_size, iso_time
from mirror.commands.warm import (
    Result,
    WarmError,
    choose_platforms,
    descriptor_sizes,
    error_from,
    index_platforms,
    mirror_path,
    summary_table,
)
from mirror.config import Settings
from mirror.oci import OCI_INDEX, parse_image_ref
from mirror.storage.blobs import BlobEntry, StoreStats, eviction_order

A, B, C = ("sha256:" + ch * 64 for ch in "abc")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without MIRROR_* variables from the developer's or CI's environment."""
    for name in list(os.environ):
        if name.upper().startswith("MIRROR_"):
            monkeypatch.delenv(name)


def entry(digest: str, size: int, accessed_at: float) -> BlobEntry:
    return BlobEntry(digest, size, stored_at=0.0, accessed_at=accessed_at)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (50 * 1024**3, "50.0 GiB"),
        (3 * 1024**5, "3.0 PiB"),
        (5 * 1024**6, "5120.0 PiB"),
    ],
)
def test_human_size_uses_binary_units(count: int, text: str) -> None:
    """Sizes print in B below 1 KiB, else with one decimal in the largest binary unit that fits."""
    assert human_size(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "0s"), (0.4, "0s"), (59, "59s"), (60, "1m"), (7200, "2h"), (3 * 86400 + 5, "3d")],
)
def test_human_age_uses_largest_whole_unit(seconds: float, text: str) -> None:
    """Ages print in their largest whole unit, and clock skew never prints a negative age."""
    assert human_age(seconds) == text


def test_iso_time_is_utc_to_the_second() -> None:
    """Unix seconds print as ISO 8601 UTC with a Z."""
    assert iso_time(86400.7) == "1970-01-02T00:00:00Z"


@pytest.mark.parametrize(("text", "expected"), [("0", 0), ("500M", 500 * 1024**2), ("2G", 2 * 1024**3)])
def test_target_size_accepts_units_and_zero(text: str, expected: int) -> None:
    """`prune --to` takes the config's size syntax, and 0 (evict everything unpinned)."""
    assert target_size(text) == expected


def test_eviction_order_takes_least_recently_used_first_and_skips_spared() -> None:
    """The plan evicts in the order given (least recently used first), passes over a spared blob, and
    stops once under the target."""
    entries = [entry(A, 10, 1.0), entry(B, 10, 2.0), entry(C, 10, 3.0), entry("sha256:" + "d" * 64, 10, 4.0)]
    planned = list(eviction_order(iter(entries), volume=40, target=20, spared={A}))
    assert [e.digest for e in planned] == [B, C]


def test_eviction_order_under_the_target_evicts_nothing() -> None:
    """A store already at or under the target is left alone."""
    assert list(eviction_order([entry(A, 10, 1.0)], volume=10, target=10, spared=())) == []


def test_sort_entries_by_access_or_size_with_limit() -> None:
    """`ls` sorts least recently used first, or largest first, and keeps at most `limit` entries."""
    entries = [entry(A, 5, 2.0), entry(B, 50, 3.0), entry(C, 20, 1.0)]
    assert [e.digest for e in sort_entries(entries, "access", None)] == [C, A, B]
    assert [e.digest for e in sort_entries(entries, "size", 2)] == [B, C]


def test_stats_doc_counts_pins_and_watermarks() -> None:
    """Stats report size against the limit, pinned entries and bytes, watermarks and access times."""
    settings = Settings(cache_max_bytes=1000, cache_high_watermark=0.9, cache_low_watermark=0.5)
    doc = stats_doc(settings, 600, StoreStats(2, 500, 10.0, 40.0), (1, 400), now=100.0)
    assert (doc["size_bytes"], doc["disk_bytes"], doc["used_percent"]) == (500, 600, 50.0)
    assert (doc["pinned_entries"], doc["pinned_bytes"]) == (1, 400)
    assert (doc["high_watermark_bytes"], doc["low_watermark_bytes"]) == (900, 500)
    assert (doc["oldest_access_age_seconds"], doc["newest_access_age_seconds"]) == (90.0, 60.0)


def test_stats_doc_of_an_empty_store_has_no_access_times() -> None:
    """An empty store reports no oldest or newest access rather than failing."""
    doc = stats_doc(Settings(), 0, StoreStats(0, 0, None, None), (0, 0), now=0.0)
    assert (doc["entries"], doc["oldest_access"], doc["newest_access"]) == (0, None, None)


@pytest.mark.parametrize(
    ("ref", "url"),
    [
        ("alpine", "http://m/v2/library/alpine/manifests/latest"),
        ("docker.io/team/app:1", "http://m/v2/team/app/manifests/1"),
        ("index.docker.io/library/redis", "http://m/v2/library/redis/manifests/latest"),
        ("ghcr.io/owner/app:1.0", "http://m/v2/owner/app/manifests/1.0?ns=ghcr.io"),
        ("registry.k8s.io/pause:3.9", "http://m/v2/pause/manifests/3.9?ns=registry.k8s.io"),
        ("host.example:5000/team/app:2", "http://m/v2/team/app/manifests/2?ns=host.example:5000"),
    ],
)
def test_mirror_url_names_registries_other_than_docker_hub_with_ns(ref: str, url: str) -> None:
    """Docker Hub images are asked for by plain name, others with containerd's ns (hosts with ports too)."""
    parsed = parse_image_ref(ref)
    assert mirror_path(parsed).url("http://m", "manifests", parsed.reference) == url


@pytest.mark.parametrize(
    ("flag", "configured", "chosen"),
    [
        (None, ("linux/amd64",), frozenset({"linux/amd64"})),
        (("linux/arm64",), ("linux/amd64",), frozenset({"linux/arm64"})),
        (("all",), ("linux/amd64",), None),
        (None, ("all",), None),
    ],
)
def test_choose_platforms_flag_beats_config_and_all_means_none(
    flag: tuple[str, ...] | None, configured: tuple[str, ...], chosen: frozenset[str] | None
) -> None:
    """`--platform` wins over the config's platforms; `all` selects every platform (None)."""
    assert choose_platforms(flag, configured) == chosen


def test_error_from_reads_the_registry_error_code() -> None:
    """A registry error document gives its first code and message."""
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode()
    found = error_from(404, body)
    assert (found.code, found.detail) == ("MANIFEST_UNKNOWN", "manifest unknown")


def test_error_from_without_a_registry_document_names_the_status() -> None:
    """A body that is not a registry error document gives HTTP_<status>."""
    assert error_from(502, b"<html>bad gateway</html>").code == "HTTP_502"


def test_descriptor_sizes_lists_config_and_layers_once() -> None:
    """Config and layer digests come with their declared sizes, each digest once."""
    manifest = json.dumps(
        {
            "config": {"digest": A, "size": 7},
            "layers": [{"digest": B, "size": 100}, {"digest": A, "size": 7}, {"digest": "bogus", "size": 1}],
        }
    ).encode()
    assert descriptor_sizes(manifest) == {A: 7, B: 100}


def test_index_platforms_maps_digests_to_os_arch_and_variant() -> None:
    """Each index entry with a platform maps its digest to os/arch, with the variant when it has one."""
    index = json.dumps(
        {
            "mediaType": OCI_INDEX,
            "manifests": [
                {"digest": A, "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": B, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"digest": C},
            ],
        }
    ).encode()
    assert index_platforms(index) == {A: "linux/amd64", B: "linux/arm64/v8"}


def test_summary_table_aligns_columns_and_shows_errors() -> None:
    """The summary has a header, aligned columns, `ok` for a warmed image and the error code otherwise."""
    results = [
        Result("docker.io/library/a:1", ["linux/amd64"], 2, 2048, 0.25),
        Result("ghcr.io/o/b:1", error=WarmError("MANIFEST_UNKNOWN", "manifest unknown")),
    ]
    lines = summary_table(results).splitlines()
    assert lines[0].split() == ["IMAGE", "PLATFORMS", "BLOBS", "BYTES", "SECONDS", "RESULT"]
    assert lines[1].split() == ["docker.io/library/a:1", "linux/amd64", "2", "2.0", "KiB", "0.2", "ok"]
    assert lines[2].endswith("error MANIFEST_UNKNOWN: manifest unknown")
    assert lines[0].index("PLATFORMS") == lines[1].index("linux/amd64") == lines[2].index("-")


@pytest.mark.parametrize("platform", ["linux", "linux/arm/v7/x", "Linux/AMD64!", ""])
def test_warm_with_a_bad_platform_exits_2(platform: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`warm --platform` with something that is not os/arch[/variant] or all is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        cli.main(["warm", "alpine", "--platform", platform])
    assert info.value.code == 2
    assert "--platform" in capsys.readouterr().err


def test_warm_with_a_bad_image_reference_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An image reference that does not parse is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        cli.main(["warm", "UPPER/Case"])
    assert info.value.code == 2
    assert "invalid repository name" in capsys.readouterr().err


def test_cache_rm_of_a_malformed_digest_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`cache rm` of something that is not a digest is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        cli.main(["cache", "rm", "sha256:abc"])
    assert info.value.code == 2


def test_cache_command_on_a_directory_without_a_store_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cache dir holding no blob store is a configuration error (exit 2), and nothing is created in it."""
    status = cli.main(["cache", "stats", "--cache-dir", str(tmp_path)])
    assert status == 2
    assert capsys.readouterr().err.startswith(f"mirror: no blob store in {tmp_path}")
    assert list(tmp_path.iterdir()) == []


def test_cache_command_with_a_bad_config_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown key in `--config` makes a cache command exit 2 naming the key."""
    config = tmp_path / "mirror.toml"
    config.write_text("colour = 1\n")
    assert cli.main(["cache", "ls", "--config", str(config)]) == 2
    assert "unknown key colour" in capsys.readouterr().err


def test_warm_with_a_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad value in the config file makes `warm` exit 2 before anything is pulled."""
    config = tmp_path / "mirror.toml"
    config.write_text('platforms = ["nope"]\n')
    assert cli.main(["warm", "alpine", "--config", str(config)]) == 2
    assert "platforms" in capsys.readouterr().err


def test_warm_command_does_not_import_the_server() -> None:
    """Importing the warm command loads no server part: no app, proxy, fills, aiocache or diskcache."""
    code = "import sys, mirror.commands.warm; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    server = {"mirror.app", "mirror.proxy", "mirror.fills", "aiocache", "diskcache", "mirror.storage.blobs"}
    assert not loaded & server
