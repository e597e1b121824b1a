"""`python -m tests.bench`: seed, start everything, run the scenarios interleaved, write the report.

Exit status: 0 when every scenario ran (missed targets are reported, not failures), 1 when a scenario or
the setup could not run, 2 when a tool is missing (run scripts/install-bench-deps).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.bench import report
from tests.bench.plan import SCENARIOS, Scenario
from tests.bench.seed import GIB, MIB, ensure_seeded
from tests.bench.stack import WARM_TAG_TTL_S, Env, Sample, SoakSettings, start_env
from tests.bench.wan import Shape

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("docker-registry", "skopeo", "nginx", "wrk", "curl")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument("--runs", type=int, help="runs per scenario (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 MiB big blob, 1 run, 2 s wrk")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 5; 2 with --quick)")
    p.add_argument("--herd", type=int, default=16, help="clients in the herd scenario (default 16)")
    p.add_argument("--only", help="comma-separated scenario numbers, e.g. 1,3,6")
    p.add_argument("--soak-connections", type=int, default=1000, help="soak connections (default 1000)")
    p.add_argument(
        "--soak-seconds", type=float, help="soak duration after its warm-up (default 60; 10 quick)"
    )
    p.add_argument("--soak-warmup", type=float, default=10.0, help="soak warm-up seconds (default 10)")
    p.add_argument(
        "--bigstore-blobs",
        type=int,
        default=100_000,
        help="blobs in scenario 11's store (default 100000; 1000000 seeds in ~13 min, once)",
    )
    p.add_argument("--wan-latency-ms", type=float, default=30.0, help="WAN link, one way (default 30)")
    p.add_argument("--wan-rate-mb", type=float, default=0, help="WAN MB/s per connection (default 0: none)")
    p.add_argument("--wan-total-rate-mb", type=float, default=100, help="WAN MB/s in all (default 100)")
    p.add_argument("--out", type=Path, default=REPO / "bench-results", help="where latest.md/.json go")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs) after the run")
    return p


def _selected(only: str | None) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    wanted = {int(n) for n in only.split(",") if n.strip()}
    return [s for s in SCENARIOS if s.number in wanted]


def _brief(sample: Sample) -> str:
    return ", ".join(f"{k}={sample[k]:.3g}" for k in ("mirror", "reference", "limit") if k in sample)


def _run_all(
    env: Env, scenarios: Sequence[Scenario], runs: int, errors: dict[str, list[str]]
) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {s.key: [] for s in scenarios}
    for run in range(runs):
        for scenario in scenarios:
            if scenario.once and run > 0:
                continue
            started = time.monotonic()
            try:
                sample = scenario.run(env, run)
            except Exception as exc:  # noqa: BLE001 - one scenario failing must not hide the others
                traceback.print_exc()
                errors.setdefault(scenario.key, []).append(f"run {run + 1}: {exc!r}"[:600])
                print(f"[run {run + 1}/{runs}] {scenario.number}. {scenario.title}: FAILED", file=sys.stderr)
                continue
            samples[scenario.key].append(sample)
            seconds = time.monotonic() - started
            print(
                f"[run {run + 1}/{runs}] {scenario.number}. {scenario.title}: {_brief(sample)}"
                f" ({seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    return samples


def _size_label(size: int) -> str:
    return f"{size // GIB} GiB" if size % GIB == 0 else f"{size // MIB} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    if missing:
        print(f"missing tools: {' '.join(missing)}; run scripts/install-bench-deps", file=sys.stderr)
        return 2
    started = time.monotonic()
    load_start = report.loadavg()
    runs = args.runs or (1 if args.quick else 3)
    duration_s = args.duration or (2.0 if args.quick else 5.0)
    big_size = 64 * MIB if args.quick else GIB
    scenarios = _selected(args.only)
    soak = SoakSettings(
        connections=args.soak_connections,
        warmup_s=args.soak_warmup,
        duration_s=args.soak_seconds or (10.0 if args.quick else 60.0),
    )
    wan = Shape(
        args.wan_latency_ms / 1000, args.wan_rate_mb * 1e6 or None, args.wan_total_rate_mb * 1e6 or None
    )
    seeded, storage = ensure_seeded(big_size)
    setup_s = time.monotonic() - started
    print(f"seeded upstream content ready in {setup_s:.1f} s ({storage})", file=sys.stderr, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    errors: dict[str, list[str]] = {}
    notes: list[str] = []
    samples: dict[str, list[Sample]] = {}
    try:
        with contextlib.ExitStack() as stack:
            logs_dir = args.out / "logs"
            shutil.rmtree(logs_dir, ignore_errors=True)  # only this run's logs stay beside latest.md
            env = start_env(
                stack,
                workdir,
                seeded,
                storage,
                duration_s=duration_s,
                herd=args.herd,
                wan=wan,
                logs_dir=logs_dir,
            )
            env.soak, env.bigstore_blobs = soak, args.bigstore_blobs
            print(
                f"servers up, caches warm ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True
            )
            notes = env.notes
            samples = _run_all(env, scenarios, runs, errors)
    except Exception as exc:  # noqa: BLE001 - the setup failed: report it, exit 1
        traceback.print_exc()
        errors.setdefault("setup", []).append(repr(exc)[:600])
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(),
        "git": report.git_state(REPO),
        "runs": runs,
        "duration_s": duration_s,
        "herd_clients": args.herd,
        "wan": wan.describe(),
        "soak": asdict(soak),
        "warm_tag_ttl_s": WARM_TAG_TTL_S,
        "big_size": big_size,
        "seeded": asdict(seeded),
        "samples": samples,
        "rows": report.table_rows(
            samples,
            big=_size_label(big_size),
            herd=args.herd,
            soak=f"{soak.connections:,} connections, {soak.duration_s:g} s",
            blobs=f"{args.bigstore_blobs:,} blobs",
        ),
        "resources": report.resources(samples),
        "errors": errors,
        "notes": notes,
        "loadavg": {"start": load_start, "end": report.loadavg()},
        "setup_seconds": setup_s,
        "wall_seconds": time.monotonic() - started,
    }
    print(report.write(args.out, result))
    print(f"written: {args.out / 'latest.md'}, {args.out / 'latest.json'}", file=sys.stderr)
    return 1 if errors else 0
