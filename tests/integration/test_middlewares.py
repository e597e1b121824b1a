"""The request middleware renders errors as registry JSON, but never into an answer already under way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import errors, keys, middlewares
from mirror.config import Settings
from mirror.metrics import Metrics

Client = TestClient[web.Request, web.Application]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _app(handler: Handler) -> web.Application:
    app = web.Application(middlewares=[middlewares.observe])
    app[keys.METRICS] = Metrics()
    app[keys.SETTINGS] = Settings()
    app.on_response_prepare.append(middlewares.add_headers)
    app.router.add_get("/blob", handler)
    return app


async def _fails_midway(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    await response.prepare(request)
    await response.write(b"x" * 10)
    raise errors.StorageUnavailable("the file went away under the answer")


async def _fails_before(request: web.Request) -> web.StreamResponse:
    raise errors.StorageUnavailable("no file")


async def test_a_failure_after_the_headers_cuts_the_connection(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    """A handler failing once its 200 headers are out gets its connection cut (a short body the client
    retries), never an error response written into the body it announced."""
    client = await aiohttp_client(_app(_fails_midway))
    resp = await client.get("/blob")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_a_failure_before_the_headers_is_registry_json(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    """A handler failing before any answer went out gets the registry error JSON with its status."""
    client = await aiohttp_client(_app(_fails_before))
    resp = await client.get("/blob")
    assert resp.status == 503
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
