"""Tag lists through the mirror from a real docker-registry: cached, served with the upstream stopped, and
listed from what the mirror holds in offline mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.artifacts import push_image
from tests.support.images import OCI_MANIFEST
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import raw_request
from tests.support.registry import Registry

NAME = "team/tagged"
TAGS = ("1.0", "2.0", "3.0")


def seeded(make_registry: Callable[..., Registry]) -> Registry:
    registry = make_registry()
    for seed, tag in enumerate(TAGS):
        push_image(registry, NAME, tag, seed=seed)
    return registry


def test_tag_lists_are_served_with_the_upstream_stopped(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    """Pages asked before (each `n`/`last` its own) are served from the cache when the upstream is gone;
    a page never asked is a 503."""
    registry = seeded(make_registry)
    with MirrorProcess(tmp_path / "mirror", registry.url, env={"MIRROR_TAG_TTL": "0"}) as mirror:
        pages = {q: raw_request("GET", f"{mirror.url}/v2/{NAME}/tags/list{q}") for q in ("", "?n=2")}
        listed = pages[""].json()
        assert isinstance(listed, dict)
        assert (listed["name"], sorted(listed["tags"])) == (NAME, list(TAGS))
        registry.stop()
        for query, before in pages.items():
            after = raw_request("GET", f"{mirror.url}/v2/{NAME}/tags/list{query}")
            assert (after.status, after.body, after.headers.get("link")) == (
                200,
                before.body,
                before.headers.get("link"),
            )
        assert raw_request("GET", f"{mirror.url}/v2/{NAME}/tags/list?n=1").status == 503


def test_offline_mode_lists_the_tags_it_holds(make_registry: Callable[..., Registry], tmp_path: Path) -> None:
    """A mirror restarted offline lists the tags whose manifests it pulled before, and only those."""
    registry = seeded(make_registry)
    with MirrorProcess(tmp_path / "mirror", registry.url) as mirror:
        for tag in TAGS[:2]:
            resp = raw_request(
                "GET", f"{mirror.url}/v2/{NAME}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
            )
            assert resp.status == 200
    mark = registry.mark()
    with MirrorProcess(tmp_path / "mirror", registry.url, env={"MIRROR_OFFLINE": "true"}) as offline:
        resp = raw_request("GET", f"{offline.url}/v2/{NAME}/tags/list")
        assert (resp.status, resp.json()) == (200, {"name": NAME, "tags": list(TAGS[:2])})
    assert registry.requests(mark) == []
