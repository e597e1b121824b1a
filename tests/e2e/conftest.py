"""Session fixtures for end-to-end tests: real docker-registry upstreams (plain, token, htpasswd)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.catalog import SPECS, Catalog, seed, seed_image
from tests.support.images import ImageInfo
from tests.support.registry import HtpasswdAuth, Registry, start_registry
from tests.support.tls import TestCa, TlsFiles
from tests.support.tokenserver import TokenServer

E2E_DIR = Path(__file__).parent
HTPASSWD_USER = "mirror"
HTPASSWD_PASSWORD = "mirror-secret"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e with `e2e`."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def e2e_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide scratch directory for registries and layouts."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def _seeded_upstream(e2e_workdir: Path) -> Iterator[tuple[Registry, Catalog]]:
    registry = start_registry(e2e_workdir / "upstream")
    try:
        catalog = seed(registry, e2e_workdir / "seed")
        yield registry, catalog
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def upstream(_seeded_upstream: tuple[Registry, Catalog]) -> Registry:
    """The plain (no auth) upstream registry, seeded with the standard catalog."""
    return _seeded_upstream[0]


@pytest.fixture(scope="session")
def catalog(_seeded_upstream: tuple[Registry, Catalog]) -> Catalog:
    """Digests and manifests of everything seeded into `upstream`."""
    return _seeded_upstream[1]


@pytest.fixture(scope="session")
def token_server(e2e_workdir: Path) -> Iterator[TokenServer]:
    """An anonymous token server (grants any scope asked) trusted by `token_registry`."""
    server = TokenServer(e2e_workdir / "token-server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(e2e_workdir: Path, token_server: TokenServer) -> Iterator[Registry]:
    """A token-auth upstream holding library/v2img:latest (same digests as in `catalog`)."""
    registry = start_registry(e2e_workdir / "token-registry", auth=token_server.auth())
    try:
        seed_image(registry, SPECS["v2img"], e2e_workdir / "token-seed")
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def htpasswd_registry(e2e_workdir: Path) -> Iterator[Registry]:
    """A Basic-auth upstream (user "mirror") holding library/v2img:latest, pushed with --dest-creds."""
    auth = HtpasswdAuth(HTPASSWD_USER, HTPASSWD_PASSWORD)
    registry = start_registry(e2e_workdir / "htpasswd-registry", auth=auth)
    try:
        seed_image(registry, SPECS["v2img"], e2e_workdir / "htpasswd-seed")
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def v2img(catalog: Catalog) -> ImageInfo:
    """library/v2img:latest as seeded everywhere."""
    return catalog.v2img


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Factory for private registries (`start_registry` kwargs, e.g. seed_from=...); stopped after."""
    started: list[Registry] = []

    def factory(**kwargs: Any) -> Registry:
        registry = start_registry(tmp_path / f"registry-{len(started)}", **kwargs)
        started.append(registry)
        return registry

    yield factory
    for registry in started:
        registry.stop()


@pytest.fixture
def make_token_server(tmp_path: Path) -> Iterator[Callable[..., TokenServer]]:
    """Factory for a private TokenServer (kwargs of `TokenServer`); stopped after."""
    started: list[TokenServer] = []

    def factory(**kwargs: Any) -> TokenServer:
        server = TokenServer(tmp_path / f"token-server-{len(started)}", **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def skopeo_tmp(tmp_path: Path) -> Path:
    """A per-test directory for skopeo's HOME, TMPDIR and caches."""
    path = tmp_path / "skopeo"
    path.mkdir()
    return path


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    """A throwaway CA for a mirror served over TLS."""
    return TestCa(tmp_path / "ca")


@pytest.fixture
def server_tls(ca: TestCa) -> TlsFiles:
    """The mirror's server certificate (127.0.0.1 and ::1), signed by `ca`."""
    pair = ca.issue("server")
    return TlsFiles(ca.ca, pair.cert, pair.key)
