"""The targets of issue 8 as table rows: which sample keys give mirror / reference / limit, and the check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Check = Callable[[float | None, float | None, float | None], tuple[bool, str] | None]


def _vs_limit(op: str, factor: float) -> Check:
    def check(mirror: float | None, reference: float | None, limit: float | None) -> tuple[bool, str] | None:
        if mirror is None or not limit:
            return None
        ratio = mirror / limit
        return (ratio >= factor if op == ">=" else ratio <= factor), f"{ratio:.2f}x limit"

    return check


def _vs_reference(factor: float) -> Check:
    def check(mirror: float | None, reference: float | None, limit: float | None) -> tuple[bool, str] | None:
        if mirror is None or not reference:
            return None
        ratio = mirror / reference
        return ratio >= factor, f"{ratio:.1f}x reference"

    return check


def _reported(mirror: float | None, reference: float | None, limit: float | None) -> tuple[bool, str] | None:
    """No target: the figure is there to explain the others."""
    return None


def _above_limit(margin: float) -> Check:
    def check(mirror: float | None, reference: float | None, limit: float | None) -> tuple[bool, str] | None:
        if mirror is None or limit is None:
            return None
        return mirror - limit <= margin, f"{mirror - limit:+.1f} vs limit"

    return check


def _below_reference(factor: float) -> Check:
    def check(mirror: float | None, reference: float | None, limit: float | None) -> tuple[bool, str] | None:
        if mirror is None or not reference:
            return None
        ratio = mirror / reference
        return ratio <= factor, f"{ratio:.2f}x reference"

    return check


def _at_most(bound: float, strict: bool = False) -> Check:
    def check(mirror: float | None, reference: float | None, limit: float | None) -> tuple[bool, str] | None:
        if mirror is None:
            return None
        return (mirror < bound if strict else mirror <= bound), f"{mirror:.3g}"

    return check


@dataclass(frozen=True)
class Row:
    """One line of the table: which sample keys give mirror / reference / limit, and the target."""

    label: str
    scenario: str
    fmt: str
    keys: tuple[str | None, str | None, str | None]
    target: str
    check: Check
    worst: bool = False  # aggregate runs by the worst (max) instead of the median


ROWS = (
    Row(
        "1. cached {big} blob, 1 stream (GB/s)",
        "cached_1",
        ".2f",
        ("mirror", "reference", "limit"),
        "≥ 0.9 x nginx",
        _vs_limit(">=", 0.9),
    ),
    Row(
        "2. cached blob, 4 streams, aggregate (GB/s)",
        "cached_4",
        ".2f",
        ("mirror", "reference", "limit"),
        "≥ 0.8 x nginx",
        _vs_limit(">=", 0.8),
    ),
    Row(
        "3. manifest GET by tag, 64 conn (req/s)",
        "manifest",
        ",.0f",
        ("mirror", "reference", "limit"),
        "≥ 10 x reference",
        _vs_reference(10),
    ),
    Row(
        "3. upstream requests per manifest GET (worst run)",
        "manifest",
        ".3f",
        ("mirror_upstream_per_request", "reference_upstream_per_request", None),
        "0 within the TTL",
        _at_most(0),
        worst=True,
    ),
    Row(
        "4. small blob GET (369 B), 64 conn (req/s)",
        "small_blob",
        ",.0f",
        ("mirror", "reference", "limit"),
        "≥ 5 x reference",
        _vs_reference(5),
    ),
    Row(
        "5. cold pull, 6-layer image, skopeo (s)",
        "cold_pull",
        ".2f",
        ("mirror", "reference", "limit"),
        "≤ 1.15 x straight",
        _vs_limit("<=", 1.15),
    ),
    Row(
        "5. cold pull: CPU-s of the pull, the server (none straight)",
        "cold_pull",
        ".3f",
        ("mirror_server_cpu_s", "reference_server_cpu_s", "limit_server_cpu_s"),
        "—",
        _reported,
    ),
    Row(
        "5. cold pull: CPU-s of the pull, the upstream",
        "cold_pull",
        ".3f",
        ("mirror_upstream_cpu_s", "reference_upstream_cpu_s", "limit_upstream_cpu_s"),
        "—",
        _reported,
    ),
    Row(
        "5. cold pull: CPU-s of the pull, skopeo",
        "cold_pull",
        ".3f",
        ("mirror_client_cpu_s", "reference_client_cpu_s", "limit_client_cpu_s"),
        "—",
        _reported,
    ),
    Row(
        "5. cold pull: cores busy (the three processes' CPU over the wall time)",
        "cold_pull",
        ".2f",
        ("mirror_cores", "reference_cores", "limit_cores"),
        "—",
        _reported,
    ),
    Row(
        "5. cold pull: upstream bytes / image bytes (worst run)",
        "cold_pull",
        ".3f",
        ("mirror_upstream_ratio", "reference_upstream_ratio", "limit_upstream_ratio"),
        "1.0 (≤ 1.01)",
        _at_most(1.01),
        worst=True,
    ),
    Row(
        "6. herd: {herd} clients, cold {big} blob, all done (s)",
        "herd",
        ".2f",
        ("mirror", "reference", "limit"),
        "≤ 1.0 x straight",
        _vs_limit("<=", 1.0),
    ),
    Row(
        "6. herd: upstream bytes / blob size (worst run)",
        "herd",
        ".3f",
        ("mirror_upstream_ratio", "reference_upstream_ratio", "limit_upstream_ratio"),
        "≤ 1.01",
        _at_most(1.01),
        worst=True,
    ),
    Row(
        "6. herd: mirror peak RSS (MiB, worst run)",
        "herd",
        ".0f",
        ("mirror_peak_rss_mib", None, None),
        "< 150",
        _at_most(150, strict=True),
        worst=True,
    ),
    Row(
        "7. cold TTFB, {big} blob (ms)",
        "cold_ttfb",
        ".1f",
        ("mirror", "reference", "limit"),
        "≤ 2 x upstream",
        _vs_limit("<=", 2.0),
    ),
    Row(
        "7. cold throughput, {big} blob (GB/s)",
        "cold_ttfb",
        ".2f",
        ("mirror_gbps", "reference_gbps", "limit_gbps"),
        "≥ 0.9 x upstream",
        _vs_limit(">=", 0.9),
    ),
    Row(
        "8. WAN upstream: cold pull, 6-layer image, skopeo (s)",
        "wan_pull",
        ".2f",
        ("mirror", "reference", "limit"),
        "≤ 1.05 x straight",
        _vs_limit("<=", 1.05),
    ),
    Row(
        "8. WAN upstream: cold pull, upstream requests (worst run)",
        "wan_pull",
        ".0f",
        ("mirror_upstream_requests", "reference_upstream_requests", "limit_upstream_requests"),
        "—",
        _reported,
        worst=True,
    ),
    Row(
        "8. WAN upstream: cold pull, connections over the link (worst run)",
        "wan_pull",
        ".0f",
        ("mirror_link_connections", "reference_link_connections", "limit_link_connections"),
        "—",
        _reported,
        worst=True,
    ),
    Row(
        "9. WAN upstream: herd of {herd} on the cold {big} blob vs 1 straight (s)",
        "wan_herd",
        ".2f",
        ("mirror", None, "limit"),
        "≤ 1.1 x one straight download",
        _vs_limit("<=", 1.1),
    ),
    Row(
        "9. WAN upstream: herd, first client done (s)",
        "wan_herd",
        ".2f",
        ("mirror_first_done_s", None, "limit_first_done_s"),
        "—",
        _reported,
    ),
    Row(
        "9. WAN upstream: herd, the mirror's upstream download (s)",
        "wan_herd",
        ".2f",
        ("mirror_fill_s", None, "limit"),
        "≤ 1.05 x one straight download",
        _vs_limit("<=", 1.05),
    ),
    Row(
        "9. WAN upstream: herd, upstream bytes / blob size (worst run)",
        "wan_herd",
        ".3f",
        ("mirror_upstream_ratio", None, "limit_upstream_ratio"),
        "≤ 1.01",
        _at_most(1.01),
        worst=True,
    ),
    Row(
        "10. soak: {soak}, requests/s after the warm-up",
        "soak",
        ",.0f",
        ("mirror", None, None),
        "—",
        _reported,
    ),
    Row(
        "10. soak: CPU cores busy, mirror (load generator in the limit column)",
        "soak",
        ".2f",
        ("mirror_cores", None, "load_cores"),
        "—",
        _reported,
    ),
    Row(
        "10. soak: client connections open at the mirror (most seen)",
        "soak",
        ",.0f",
        ("mirror_connections_open", None, None),
        "—",
        _reported,
    ),
    Row("10. soak: 5xx answers", "soak", ".0f", ("mirror_5xx", None, None), "0", _at_most(0)),
    Row(
        "10. soak: failed requests (non-200, resets, timeouts)",
        "soak",
        ".0f",
        ("mirror_failed", None, None),
        "0",
        _at_most(0),
    ),
    Row(
        "10. soak: bodies with wrong bytes",
        "soak",
        ".0f",
        ("mirror_wrong_bytes", None, None),
        "0",
        _at_most(0),
    ),
    Row(
        "10. soak: cold requests (the limit column: fills stopped as abandoned, blobs not stored)",
        "soak",
        ",.0f",
        ("mirror_cold_requests", None, "mirror_fills_abandoned"),
        "—",
        _reported,
    ),
    Row(
        "10. soak: mirror RSS at the end / after the warm-up",
        "soak",
        ".3f",
        ("mirror_rss_growth", None, None),
        "≤ 1.10",
        _at_most(1.10),
    ),
    *(
        Row(
            f"10. soak: {kind} GET {q} (ms)",
            "soak",
            ".1f",
            (f"mirror_{key}_{q}_ms", None, None),
            "—",
            _reported,
        )
        for kind, key in (("manifest", "manifest"), ("cached blob", "cached"), ("cold blob", "cold"))
        for q in ("p50", "p99")
    ),
    Row(
        "11. store of {blobs} (limit: empty store): seconds to serving",
        "bigstore",
        ".2f",
        ("mirror_ready_s", None, "limit_ready_s"),
        "≤ 0.5",
        _at_most(0.5),
    ),
    Row(
        "11. store of {blobs}: RSS at serving (MiB)",
        "bigstore",
        ".1f",
        ("mirror_rss_ready_mib", None, "limit_rss_ready_mib"),
        "≤ empty + 10 MiB",
        _above_limit(10),
    ),
    Row(
        "11. store of {blobs}: heap (anonymous RSS) at serving (MiB)",
        "bigstore",
        ".1f",
        ("mirror_heap_ready_mib", None, "limit_heap_ready_mib"),
        "≤ empty + 10 MiB",
        _above_limit(10),
    ),
    Row(
        "11. store of {blobs}: /metrics scrape (ms)",
        "bigstore",
        ".1f",
        ("mirror_scrape_ms", None, "limit_scrape_ms"),
        "O(1): ≤ 2 x empty",
        _vs_limit("<=", 2.0),
    ),
    Row(
        "11. store of {blobs}: background integrity pass done (s after spawn)",
        "bigstore",
        ".1f",
        ("mirror_checked_s", None, "limit_checked_s"),
        "—",
        _reported,
    ),
    Row(
        "11. store of {blobs}: RSS after the integrity pass (MiB)",
        "bigstore",
        ".1f",
        ("mirror_rss_checked_mib", None, "limit_rss_checked_mib"),
        "—",
        _reported,
    ),
    Row(
        "11. store of {blobs}, evicting 87 % at start-up: seconds to serving",
        "bigstore",
        ".2f",
        ("mirror_evict_ready_s", None, None),
        "≤ 0.5 (eviction in the background)",
        _at_most(0.5),
    ),
    Row(
        "11. store of {blobs}: start-up eviction, blobs/s (from spawn to done)",
        "bigstore",
        ",.0f",
        ("mirror_eviction_rate", None, None),
        "—",
        _reported,
    ),
    Row(
        "7. CPU-s per cold GiB: the server (the upstream's own when straight)",
        "cold_ttfb",
        ".2f",
        ("mirror_cpu_s", "reference_cpu_s", "limit_cpu_s"),
        "≤ 1.1 (mirror)",
        _at_most(1.1),
    ),
    Row(
        "7. CPU-s per cold GiB: the upstream feeding it",
        "cold_ttfb",
        ".2f",
        ("mirror_upstream_cpu_s", "reference_upstream_cpu_s", "limit_upstream_cpu_s"),
        "—",
        _reported,
    ),
    Row(
        "7. CPU-s per cold GiB: the client (curl)",
        "cold_ttfb",
        ".2f",
        ("mirror_client_cpu_s", "reference_client_cpu_s", "limit_client_cpu_s"),
        "—",
        _reported,
    ),
    Row(
        "7. floor (no mirror): CPU-s per cold GiB of one thread that receives, writes, hashes, sends",
        "cold_ttfb",
        ".2f",
        ("floor_cpu_s", None, None),
        "—",
        _reported,
    ),
    Row(
        "7. floor: CPU-s per GiB of SHA-256 alone",
        "cold_ttfb",
        ".2f",
        ("floor_sha256_cpu_s", None, None),
        "—",
        _reported,
    ),
    Row(
        "7. floor: CPU-s per GiB of the page-cache write alone, in the mirror's 128 KiB writes",
        "cold_ttfb",
        ".2f",
        ("floor_write_cpu_s", None, None),
        "—",
        _reported,
    ),
    Row(
        "7. floor: CPU-s per GiB of the page-cache write alone, in 1 MiB writes",
        "cold_ttfb",
        ".2f",
        ("floor_write_1m_cpu_s", None, None),
        "—",
        _reported,
    ),
    Row(
        "7. floor: CPU-s per cold GiB of the thread, the upstream and curl together",
        "cold_ttfb",
        ".2f",
        ("floor_total_cpu_s", None, None),
        "—",
        _reported,
    ),
    Row(
        "7. mirror CPU-s per cold GiB over the floor's, run for run",
        "cold_ttfb",
        ".2f",
        ("mirror_over_floor", None, None),
        "—",
        _reported,
    ),
    Row(
        "12. cold small-blob burst: server CPU per request (µs)",
        "cold_burst",
        ",.0f",
        ("mirror", "reference", "limit"),
        "≤ 1.0 x reference",
        _below_reference(1.0),
    ),
    Row(
        "12. cold small-blob burst: wall time per request (µs)",
        "cold_burst",
        ",.0f",
        ("mirror_wall_us", "reference_wall_us", "limit_wall_us"),
        "≤ 1.5 x straight",
        _vs_limit("<=", 1.5),
    ),
)
