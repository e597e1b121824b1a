"""`mirror doctor`'s report: one JSON document, and the same as text for a person at a terminal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mirror.commands.doctor.checks import PROBLEM, RuntimeResult


def document(
    results: Sequence[RuntimeResult], missing: Sequence[tuple[str, str, bool]], mirror_url: str | None
) -> dict[str, Any]:
    """The report as plain values. `missing`: (runtime, file, was asked for) of runtimes not found."""
    runtimes = []
    for result in results:
        config = result.config
        runtimes.append(
            {
                "runtime": config.runtime,
                "ok": result.ok,
                "files": list(config.files),
                "notes": list(config.notes),
                "problems": list(config.problems),
                "fixes": list(config.fixes),
                "registries": [
                    {
                        "registry": f.registry,
                        "status": f.status,
                        "via": f.via,
                        "source": f.source,
                        "problems": f.problems,
                        "fixes": f.fixes,
                        "note": f.note,
                        "probe": None
                        if f.probe is None
                        else {
                            "image": f.probe.image,
                            "ok": f.probe.ok,
                            "digest": f.probe.digest,
                            "media_type": f.probe.media_type,
                            "requests": f.probe.requests,
                            "error": f.probe.error,
                        },
                    }
                    for f in result.findings
                ],
            }
        )
    not_found = [{"runtime": r, "file": file, "asked": asked} for r, file, asked in missing]
    problems = [r for r in runtimes if not r["ok"]] + [m for m in not_found if m["asked"]]
    return {
        "ok": bool(runtimes) and not problems,
        "mirror": mirror_url,
        "runtimes": runtimes,
        "not_found": not_found,
    }


def as_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2)


def _registry_lines(entry: dict[str, Any]) -> list[str]:
    status = "PROBLEM" if entry["status"] == PROBLEM else entry["status"]
    head = f"  {status:<11} {entry['registry']:<20}"
    head += f" via {entry['via']}" if entry["via"] else " not through a mirror"
    lines = [head + (f"  ({entry['source']})" if entry["source"] else "")]
    probe = entry["probe"]
    if probe is not None and probe["ok"]:
        lines.append(f"{'':14}proven: {probe['image']} is {probe['digest']}")
        lines += [f"{'':16}{r}" for r in probe["requests"]]
    elif probe is not None:
        lines += [f"{'':16}{r}" for r in probe["requests"]]
    label = "problem" if entry["status"] == PROBLEM else "why"  # unsupported: a limit, not a fault
    lines += [f"{'':14}{label}: {p}" for p in entry["problems"]]
    lines += [f"{'':14}fix: {f}" for f in entry["fixes"]]
    if entry["note"]:
        lines.append(f"{'':14}{entry['note']}")
    return lines


def as_text(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    for runtime in doc["runtimes"]:
        lines.append(f"{runtime['runtime']}: {', '.join(runtime['files'])}")
        lines += [f"  problem: {p}" for p in runtime["problems"]]
        lines += [f"  fix: {f}" for f in runtime["fixes"]]
        lines += [f"  note: {n}" for n in runtime["notes"]]
        for entry in runtime["registries"]:
            lines += _registry_lines(entry)
    for missing in doc["not_found"]:
        asked = "problem: asked for but " if missing["asked"] else ""
        lines.append(f"{missing['runtime']}: {asked}not found ({missing['file']})")
    if not doc["runtimes"]:
        lines.append("problem: no container runtime configuration found")
    lines.append("all pulls checked go through the mirror" if doc["ok"] else "problems found (exit status 1)")
    return "\n".join(lines)
