"""What every operator command shares: exit codes, argument parsing, human-readable sizes and times."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias

from mirror.errors import RegistryError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_AGES = ((86400, "d"), (3600, "h"), (60, "m"))

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # no public name for it


def human_size(count: int) -> str:
    """Bytes in binary units: `512 B`, `1.5 KiB`, `50.0 GiB`."""
    if abs(count) < 1024:
        return f"{count} B"
    value, unit = count / 1024, 1
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {_UNITS[unit]}"


def human_age(seconds: float) -> str:
    """A duration in its largest whole unit: `42s`, `5m`, `3h`, `2d` (negative, from clock skew: `0s`)."""
    whole = max(int(seconds), 0)
    for size, unit in _AGES:
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def iso_time(timestamp: float) -> str:
    """Unix seconds as an ISO 8601 UTC time, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type=` from a value parser: its ValueError (or registry error) becomes a usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError, RegistryError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert
