"""Medians against the targets, and the report: a Markdown table and a JSON file of every sample."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.bench.plan import SCENARIOS
from tests.bench.stack import Sample
from tests.bench.targets import ROWS


def aggregate(samples: Sequence[Sample], key: str | None, worst: bool = False) -> float | None:
    """Median (or max) of `key` over the runs that have it."""
    values = [s[key] for s in samples if key is not None and key in s]
    if not values:
        return None
    return max(values) if worst else statistics.median(values)


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def table_rows(samples: dict[str, list[Sample]], **names: object) -> list[dict[str, Any]]:
    """Each row's figures, the mirror/reference ratio and whether the target is met; `names` fill the
    labels' placeholders (`big`, `herd`, `soak`)."""
    rows = []
    for row in ROWS:
        runs = samples.get(row.scenario, [])
        mirror, reference, limit = (aggregate(runs, k, row.worst) for k in row.keys)
        verdict = row.check(mirror, reference, limit)
        ratio = mirror / reference if mirror is not None and reference else None
        rows.append(
            {
                "label": row.label.format(**names),
                "scenario": row.scenario,
                "mirror": mirror,
                "reference": reference,
                "limit": limit,
                "mirror_over_reference": ratio,
                "target": row.target,
                "met": None if verdict is None else verdict[0],
                "achieved": None if verdict is None else verdict[1],
                "fmt": row.fmt,
            }
        )
    return rows


def resources(samples: dict[str, list[Sample]]) -> list[dict[str, Any]]:
    """Per scenario: the mirror's worst peak RSS and median CPU seconds over its part of each run."""
    out = []
    for scenario in SCENARIOS:
        runs = samples.get(scenario.key, [])
        out.append(
            {
                "scenario": f"{scenario.number}. {scenario.title}",
                "peak_rss_mib": aggregate(runs, "mirror_peak_rss_mib", worst=True),
                "cpu_s": aggregate(runs, "mirror_cpu_s"),
            }
        )
    return out


def machine() -> dict[str, Any]:
    """What ran the bench: CPU model and count, memory, kernel, Python, tool versions."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other work on this machine skews every figure)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def git_state(repo: Path) -> dict[str, str]:
    """The commit and whether the work tree had changes (others edit `mirror/` while the bench runs)."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False
        )
        return result.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": git("status", "--porcelain", "mirror")}


def markdown(report: dict[str, Any]) -> str:
    """The tables and notes as Markdown."""
    m = report["machine"]
    dirty = " (with uncommitted changes under mirror/)" if report["git"]["dirty"] else ""
    lines = [
        f"# mirror bench, {report['date']}",
        "",
        f"Machine: {m['cpus']} x {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}. Commit {report['git']['commit']}{dirty}. {report['runs']} runs per scenario "
        f"(medians; worst run where marked), big blob {report['big_size']:,} bytes, "
        f"wrk {report['duration_s']:g} s, reference: distribution 2.8 in proxy mode; the warm mirror runs "
        f"with a tag TTL of {report['warm_tag_ttl_s']} s. WAN link (8, 9): {report.get('wan', '—')}. "
        f"Total {report['wall_seconds']:.0f} s; load average {report['loadavg']['start']} at the start, "
        f"{report['loadavg']['end']} at the end.",
        "",
        "| scenario | mirror | reference | limit | mirror/reference | target | met? |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in report["rows"]:
        ratio = "—" if r["mirror_over_reference"] is None else f"{r['mirror_over_reference']:.2f}x"
        met = "—" if r["met"] is None else f"{'yes' if r['met'] else '**no**'} ({r['achieved']})"
        cells = [_cell(r[k], r["fmt"]) for k in ("mirror", "reference", "limit")]
        lines.append(f"| {r['label']} | {' | '.join(cells)} | {ratio} | {r['target']} | {met} |")
    lines += ["", "Mirror resources per scenario (its part of each run):", ""]
    lines += ["| scenario | peak RSS (MiB, worst) | CPU seconds (median) |", "|---|---:|---:|"]
    for r in report["resources"]:
        lines.append(f"| {r['scenario']} | {_cell(r['peak_rss_mib'], '.0f')} | {_cell(r['cpu_s'], '.2f')} |")
    lines += [
        "",
        "Limits: nginx with sendfile for cached blobs; the upstream registry itself for request rates and "
        "cold fetches; skopeo or 16 curls straight from the upstream for the pull and the herd; skopeo or "
        "one curl straight over the WAN link for 8 and 9 (the reference is left out of 9: it fetches the "
        "blob once per client).",
    ]
    if report["errors"]:
        lines += ["", "## Scenarios that could not run", ""]
        lines += [f"- {key}: {msg}" for key, msgs in report["errors"].items() for msg in msgs]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, report: dict[str, Any]) -> str:
    """Write latest.md and latest.json under `out_dir`; return the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out_dir / "latest.md").write_text(text)
    (out_dir / "latest.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return text


def _json_default(value: object) -> object:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    return str(value)
