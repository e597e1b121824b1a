"""Allow and deny lists: which repositories of an upstream the mirror serves at all. Pure: no I/O.

Patterns are globs over repository names as the upstream knows them (Docker Hub's official images are
`library/<name>`): `*` matches within one path component, `**` across components, `?` one character
other than `/`. Deny wins over allow; an empty allow list allows everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mirror import errors

_GLOB = re.compile(r"\*\*|\*|\?|[^*?]+")
_WILDCARDS = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
_COMPONENT = r"[a-z0-9*?]+(?:(?:\.|_|__|-+)[a-z0-9*?]+)*"
_PATTERN = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


class RepositoryRefused(errors.Denied):
    """A repository the allow and deny lists keep out: no upstream request is made for it."""

    message = "the mirror's allow and deny lists refuse this repository"

    def __init__(self, upstream: str, name: str) -> None:
        super().__init__(f"{upstream}/{name} is not served by this mirror")
        self.upstream = upstream


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression matching a whole repository name against `pattern`."""
    return re.compile("".join(_WILDCARDS.get(piece) or re.escape(piece) for piece in _GLOB.findall(pattern)))


def check_pattern(pattern: str) -> str:
    """`pattern` if it can match a repository name (lowercase components, `*`, `**`, `?`), else ValueError."""
    if not _PATTERN.fullmatch(pattern):
        raise ValueError(f"{pattern!r} is not a repository pattern (lowercase name components, * ** ?)")
    return pattern


@dataclass(frozen=True)
class RepositoryLists:
    """The allow and deny patterns of one upstream."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    _allow: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow", tuple(compile_glob(p) for p in self.allow))
        object.__setattr__(self, "_deny", tuple(compile_glob(p) for p in self.deny))

    def permits(self, name: str) -> bool:
        """Whether repository `name` (the upstream's own name) may be served."""
        if any(p.fullmatch(name) for p in self._deny):
            return False
        return not self._allow or any(p.fullmatch(name) for p in self._allow)
