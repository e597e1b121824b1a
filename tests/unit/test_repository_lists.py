"""Allow and deny lists: glob patterns over the upstream's repository names."""

from __future__ import annotations

import pytest

from mirror.upstream.repository_lists import RepositoryLists, check_pattern


@pytest.mark.parametrize(
    ("allow", "deny", "name", "permitted"),
    [
        ((), (), "library/alpine", True),
        (("library/*",), (), "library/alpine", True),
        (("library/*",), (), "bitnami/redis", False),
        (("library/*",), (), "library/sub/alpine", False),
        (("team-a/**",), (), "team-a/sub/app", True),
        (("team-a/**",), (), "team-a", False),
        (("**",), (), "any/thing/at/all", True),
        ((), ("library/ubuntu",), "library/ubuntu", False),
        ((), ("library/ubuntu",), "library/ubuntu-debootstrap", True),
        ((), ("library/ubuntu*",), "library/ubuntu-debootstrap", False),
        (("library/*",), ("library/ubuntu",), "library/ubuntu", False),
        (("library/*",), ("library/ubuntu",), "library/alpine", True),
        (("team-?/app",), (), "team-b/app", True),
        (("team-?/app",), (), "team-bb/app", False),
        (("team-?/app",), (), "team/app", False),
        (("a.b/c",), (), "aXb/c", False),
        (("owner/app",), (), "owner/app", True),
        (("owner/app",), (), "owner/app2", False),
    ],
)
def test_permits(allow: tuple[str, ...], deny: tuple[str, ...], name: str, permitted: bool) -> None:
    """Deny wins, an empty allow list allows all, `*` stays in one component, `**` crosses them."""
    assert RepositoryLists(allow, deny).permits(name) is permitted


@pytest.mark.parametrize("pattern", ["library/*", "**", "team-a/**", "a.b_c-d/e?", "x/*/y"])
def test_check_pattern_accepts(pattern: str) -> None:
    """Lowercase name components with wildcards are patterns."""
    assert check_pattern(pattern) == pattern


@pytest.mark.parametrize("pattern", ["", "Library/alpine", "library/", "/x", "a//b", "a b", "x[ab]"])
def test_check_pattern_rejects(pattern: str) -> None:
    """What could never match a repository name is a configuration error."""
    with pytest.raises(ValueError, match="not a repository pattern"):
        check_pattern(pattern)
