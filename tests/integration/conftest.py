"""Fixtures: the mirror app in-process against a hand-written upstream, both on real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mirror import keys
from mirror.app import create_app
from mirror.config import Settings, load
from tests.integration.fake_upstream import FakeUpstream, RawAnswer, RawUpstream

MirrorFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def fake() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def upstream(
    fake: FakeUpstream, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[TestServer]:
    server = await aiohttp_server(fake.app())
    yield server
    fake.release.set()


@pytest.fixture
def make_settings(tmp_path: Path, upstream: TestServer) -> Callable[..., Awaitable[Settings]]:
    """Settings of a mirror whose upstream is the fake; overrides are setting values."""

    async def build(config: str | None = None, **overrides: Any) -> Settings:
        flags: dict[str, Any] = {
            "upstream": str(upstream.make_url("")).rstrip("/"),
            "cache_dir": str(tmp_path / "cache"),
            "listen": "127.0.0.1:5000",
        }
        flags.update(overrides)
        config_file = None
        if config is not None:
            config_file = tmp_path / "mirror.toml"
            await asyncio.to_thread(config_file.write_text, config)
        return await asyncio.to_thread(load, flags, {}, config_file)

    return build


@pytest.fixture
async def make_mirror(
    make_settings: Callable[..., Awaitable[Settings]],
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> MirrorFactory:
    """Start a mirror app on a free port whose upstream is the fake; overrides are setting values."""

    async def start(config: str | None = None, **overrides: Any) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(create_app(await make_settings(config, **overrides)))

    return start


@pytest.fixture
async def mirror(make_mirror: MirrorFactory) -> TestClient[web.Request, web.Application]:
    return await make_mirror()


async def stored(client: TestClient[web.Request, web.Application], digest: str) -> bool:
    """Whether the mirror's blob store holds `digest`."""
    store = client.app[keys.STORE]
    return await asyncio.to_thread(store.__contains__, digest)


RawScript = Callable[[str, str, dict[str, str]], Awaitable[RawAnswer]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[RawScript], Awaitable[RawUpstream]]]:
    """Start `RawUpstream`s with a script each; all are closed at the end of the test."""
    started: list[RawUpstream] = []

    async def start(answer: RawScript) -> RawUpstream:
        server = await RawUpstream(answer).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()
