"""Client authentication in-process against the fake upstream: htpasswd (bcrypt) and static tokens,
refusals before any cache or upstream work, open probes, the verification cache, reloads, audit fields."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from mirror import keys
from tests.integration.conftest import MirrorFactory, stored
from tests.integration.fake_upstream import FakeUpstream
from tests.support.htpasswd import bcrypt_hash
from tests.support.polling import eventually

Client = TestClient[web.Request, web.Application]
TOKEN = "ci-token-0123456789abcdef"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    """An htpasswd file with bcrypt hashes, written next to the path and moved over it (atomic)."""
    temp = path.with_suffix(".new")
    temp.write_text("".join(f"{user}:{bcrypt_hash(password)}\n" for user, password in users.items()))
    os.replace(temp, path)


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    write_htpasswd(path, {"alice": "wonderland"})
    return path


@pytest.fixture
def make_authed(
    make_mirror: MirrorFactory, htpasswd: Path, tmp_path: Path
) -> Callable[..., Awaitable[Client]]:
    """A mirror with auth_htpasswd (alice/wonderland) and an auth_tokens file (ci: TOKEN)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# machine clients\nci:{TOKEN}\n")

    async def start(**overrides: Any) -> Client:
        return await make_mirror(
            auth_htpasswd=str(htpasswd), auth_tokens=str(tokens), reload_interval=0.05, **overrides
        )

    return start


@pytest.fixture
async def authed(make_authed: Callable[..., Awaitable[Client]]) -> Client:
    return await make_authed()


@pytest.fixture
def image(fake: FakeUpstream) -> tuple[str, str]:
    """library/app:1 on the fake: (manifest digest, layer digest)."""
    layer = fake.add_blob(b"layer bytes")
    return fake.add_manifest("library/app", "1", [layer]), layer


def failures(client: Client, reason: str) -> float:
    value: float = client.app[keys.METRICS].auth_failures.labels(reason)._value.get()
    return value


async def test_no_credentials_get_401_with_a_basic_challenge_and_nothing_upstream(
    authed: Client, fake: FakeUpstream, image: tuple[str, str]
) -> None:
    """Without credentials: 401 UNAUTHORIZED, WWW-Authenticate Basic realm="mirror", upstream untouched."""
    for path in ("/v2/", "/v2/library/app/manifests/1", f"/v2/library/app/blobs/{image[1]}"):
        resp = await authed.get(path)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="mirror"'
        assert (await resp.json())["errors"][0]["code"] == "UNAUTHORIZED"
    assert fake.seen == []
    assert failures(authed, "missing") == 3


async def test_a_wrong_password_gets_401_is_counted_and_logged_without_the_password(
    authed: Client, fake: FakeUpstream, image: tuple[str, str]
) -> None:
    """A wrong password: 401, auth_failures{reason="wrong"}, a log line naming the user, not the password."""
    with capture_logs() as logs:
        resp = await authed.get("/v2/library/app/manifests/1", headers=basic("alice", "s3cret-guess"))
    assert resp.status == 401
    assert fake.seen == []
    assert failures(authed, "wrong") == 1
    refused = next(e for e in logs if e["event"] == "auth_refused")
    assert (refused["user"], refused["reason"]) == ("alice", "wrong")
    assert "s3cret-guess" not in json.dumps(logs, default=str)


async def test_an_unknown_user_and_malformed_credentials_are_refused(authed: Client) -> None:
    """An unknown user is `wrong`, a header that is not Basic/Bearer is `malformed`: both 401."""
    assert (await authed.get("/v2/", headers=basic("mallory", "x"))).status == 401
    assert (await authed.get("/v2/", headers={"Authorization": "Digest abc"})).status == 401
    assert (await authed.get("/v2/", headers={"Authorization": "Basic !!!"})).status == 401
    assert (failures(authed, "wrong"), failures(authed, "malformed")) == (1, 2)


async def test_the_cache_is_never_served_to_an_unauthenticated_client(
    authed: Client, fake: FakeUpstream, image: tuple[str, str]
) -> None:
    """After alice pulled (manifest and blob now cached), the same requests without credentials get 401."""
    digest, layer = image
    assert (
        await authed.get("/v2/library/app/manifests/1", headers=basic("alice", "wonderland"))
    ).status == 200
    blob = await authed.get(f"/v2/library/app/blobs/{layer}", headers=basic("alice", "wonderland"))
    assert await blob.read() == b"layer bytes"
    await eventually(lambda: stored(authed, layer))
    seen = len(fake.seen)
    for path in (
        "/v2/library/app/manifests/1",
        f"/v2/library/app/manifests/{digest}",
        f"/v2/x/blobs/{layer}",
    ):
        assert (await authed.get(path)).status == 401
        assert (await authed.head(path)).status == 401
    assert len(fake.seen) == seen


async def test_good_credentials_pull_and_the_clients_authorization_never_goes_upstream(
    authed: Client, fake: FakeUpstream, image: tuple[str, str]
) -> None:
    """alice pulls a manifest and a blob; no upstream request carries her Authorization (or any)."""
    creds = basic("alice", "wonderland")
    assert (await authed.get("/v2/library/app/manifests/1", headers=creds)).status == 200
    assert (
        await (await authed.get(f"/v2/library/app/blobs/{image[1]}", headers=creds)).read() == b"layer bytes"
    )
    assert fake.seen
    assert all("Authorization" not in s.headers for s in fake.seen)


async def test_a_static_bearer_token_pulls_under_its_name(
    authed: Client, fake: FakeUpstream, image: tuple[str, str]
) -> None:
    """`Authorization: Bearer <token>` from auth_tokens is accepted; the log names the token's owner."""
    with capture_logs() as logs:
        resp = await authed.get("/v2/library/app/manifests/1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    line = next(e for e in logs if e["event"] == "request")
    assert (line["identity"], line["auth"]) == ("ci", "token")
    assert all(TOKEN not in str(s.headers) for s in fake.seen)
    wrong = await authed.get("/v2/", headers={"Authorization": "Bearer not-the-token-0123456789"})
    assert wrong.status == 401


async def test_probes_stay_open_and_metrics_is_open_by_default(authed: Client) -> None:
    """/healthz, /readyz and /metrics answer without credentials unless metrics_auth is set."""
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await authed.get(path)).status == 200


async def test_metrics_auth_puts_metrics_behind_the_same_credentials(
    make_authed: Callable[..., Awaitable[Client]],
) -> None:
    """With metrics_auth, /metrics needs credentials; probes stay open."""
    client = await make_authed(metrics_auth="true")
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=basic("alice", "wonderland"))).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_repeated_and_concurrent_checks_of_one_pair_run_bcrypt_once(authed: Client) -> None:
    """Eight concurrent requests, then eight more, with the same credentials cost one bcrypt check."""
    creds = basic("alice", "wonderland")
    first = await asyncio.gather(*(authed.get("/v2/", headers=creds) for _ in range(8)))
    later = [await authed.get("/v2/", headers=creds) for _ in range(8)]
    assert all(r.status == 200 for r in (*first, *later))
    checks = authed.app[keys.METRICS].auth_checks
    assert checks.labels("verified")._value.get() == 1
    assert checks.labels("cached")._value.get() >= 8


async def test_an_edited_htpasswd_is_reloaded_while_running(
    authed: Client, htpasswd: Path, fake: FakeUpstream
) -> None:
    """Replacing the file: the new user gets in and the removed user (even with a cached check) is out."""
    assert (await authed.get("/v2/", headers=basic("alice", "wonderland"))).status == 200
    await asyncio.to_thread(write_htpasswd, htpasswd, {"bob": "builder"})

    async def bob_gets_in() -> bool:
        return (await authed.get("/v2/", headers=basic("bob", "builder"))).status == 200

    await eventually(bob_gets_in)
    assert (await authed.get("/v2/", headers=basic("alice", "wonderland"))).status == 401


async def test_an_unreadable_htpasswd_renewal_keeps_the_previous_users(
    authed: Client, htpasswd: Path
) -> None:
    """A changed file that cannot be read (here: not UTF-8) keeps the old users (auth_reload_failed)."""
    reloads = authed.app[keys.METRICS].auth_reloads.labels("error")
    await asyncio.to_thread(htpasswd.write_bytes, b"alice:\xff\xfe\n")
    await eventually(lambda: reloads._value.get() >= 1)
    assert (await authed.get("/v2/", headers=basic("alice", "wonderland"))).status == 200


async def test_the_request_log_line_says_who_pulled_what(authed: Client, image: tuple[str, str]) -> None:
    """The request line carries user_agent, identity, auth and the image as registry/name:tag or @digest."""
    _, layer = image
    headers = {**basic("alice", "wonderland"), "User-Agent": "containerd/1.6.20"}
    with capture_logs() as logs:
        await (await authed.get("/v2/library/app/manifests/1", headers=headers)).read()
        await (await authed.get(f"/v2/library/app/blobs/{layer}", headers=headers)).read()
    lines = [e for e in logs if e["event"] == "request"]
    assert [(e["user_agent"], e["identity"], e["auth"]) for e in lines] == [
        ("containerd/1.6.20", "alice", "basic")
    ] * 2
    assert [e["image"] for e in lines] == ["docker.io/library/app:1", f"docker.io/library/app@{layer}"]
