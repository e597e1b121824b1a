"""An upstream that lies in its headers, its token documents or its redirects: the upstream is blamed
(502/503, stale serving), never the client (400) or the mirror (500), nothing wrong is cached, and no
request waits for a fill that died."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror import oci
from tests.integration.conftest import MirrorFactory, RawScript
from tests.integration.fake_upstream import FakeUpstream, RawAnswer, RawUpstream, raw_response
from tests.support.digests import sha256 as digest_of

Client = TestClient[web.Request, web.Application]
StartRaw = Callable[[RawScript], Awaitable[RawUpstream]]
ACCEPT = {"Accept": f"{oci.OCI_MANIFEST}, {oci.DOCKER_MANIFEST}"}
TAG = "/v2/library/app/manifests/1.0"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "layers": []}).encode()
BLOB = bytes(range(256)) * 64
#: How long a test waits for an answer that must come at once (the bug it guards against is a hang).
PROMPTLY = 10.0


def image(fake: FakeUpstream) -> str:
    return fake.add_manifest("library/app", "1.0", [fake.add_blob(b"a" * 10)])


async def metric(mirror: Client, line_start: str) -> str:
    text = await (await mirror.get("/metrics")).text()
    return next((line for line in text.splitlines() if line.startswith(line_start)), "")


async def test_malformed_digest_header_is_the_upstream_error(fake: FakeUpstream, mirror: Client) -> None:
    """A manifest whose Docker-Content-Digest is malformed answers 502, not 400 DIGEST_INVALID."""
    image(fake)
    fake.manifest_headers["Docker-Content-Digest"] = "sha256:not-hex"
    resp = await mirror.get(TAG, headers=ACCEPT)
    assert resp.status == 502
    assert "malformed Docker-Content-Digest" in (await resp.json())["errors"][0]["detail"]


async def test_malformed_digest_on_revalidation_serves_stale(
    fake: FakeUpstream, make_mirror: MirrorFactory
) -> None:
    """When the revalidation HEAD of a cached tag carries a malformed digest, the cached manifest is
    served stale."""
    mirror = await make_mirror(tag_ttl=0)
    digest = image(fake)
    assert (await mirror.get(TAG, headers=ACCEPT)).status == 200
    fake.manifest_headers["Docker-Content-Digest"] = "md5:abc"
    resp = await mirror.get(TAG, headers=ACCEPT)
    assert resp.status == 200
    assert resp.headers["Docker-Content-Digest"] == digest
    assert fake.requests("HEAD", "manifests")


async def test_manifest_shorter_than_its_length_is_refused_and_not_cached(
    raw_upstream: StartRaw, make_mirror: MirrorFactory
) -> None:
    """A manifest whose Content-Length is shorter than its body (no digest header) answers 502 and is
    not cached: the next request asks upstream again."""

    short = len(MANIFEST) - 7

    async def pieces() -> AsyncIterator[bytes]:
        headers = {"Content-Type": oci.OCI_MANIFEST, "Content-Length": str(short)}
        yield raw_response(200, headers, MANIFEST[:short], close=False)
        await asyncio.sleep(0.2)  # the rest arrives apart, as on a real network: after the answer
        yield MANIFEST[short:]

    async def answer(method: str, path: str, headers: dict[str, str]) -> RawAnswer:
        return pieces()

    upstream = await raw_upstream(answer)
    mirror = await make_mirror(upstream=upstream.url, breaker_failures=100)
    first = await mirror.get(TAG, headers=ACCEPT)
    assert first.status == 502
    assert "not a JSON document" in (await first.json())["errors"][0]["detail"]
    await asyncio.sleep(0.3)  # the leftover bytes reached the mirror's pooled connection
    assert (await mirror.get(TAG, headers=ACCEPT)).status in (502, 503)  # asked again, not cached


async def test_manifest_that_is_not_json_is_refused(
    raw_upstream: StartRaw, make_mirror: MirrorFactory
) -> None:
    """A manifest by tag whose body is not a JSON object answers 502 and is not cached."""

    async def answer(method: str, path: str, headers: dict[str, str]) -> RawAnswer:
        body = b"<html>login</html>"
        return raw_response(200, {"Content-Type": "text/html", "Content-Length": str(len(body))}, body)

    upstream = await raw_upstream(answer)
    mirror = await make_mirror(upstream=upstream.url)
    for _ in range(2):
        assert (await mirror.get(TAG, headers=ACCEPT)).status == 502
    assert len(upstream.seen) == 2


async def test_accept_without_manifest_types_gets_the_manifest_in_its_own_type(
    fake: FakeUpstream, mirror: Client
) -> None:
    """An Accept naming no v2/OCI type asks upstream for every manifest type and serves the manifest in
    its own, as registries do (the upstream answers 406 to an Accept it cannot serve)."""
    fake.strict_accept = True
    digest = image(fake)
    for _ in range(2):  # a miss, then the cached tag
        resp = await mirror.get(TAG, headers={"Accept": "text/html"})
        assert resp.status == 200
        assert resp.headers["Content-Type"] == oci.OCI_MANIFEST
        assert resp.headers["Docker-Content-Digest"] == digest
    assert oci.OCI_MANIFEST in fake.requests("GET", "manifests")[0].headers["Accept"]


async def test_token_realm_on_another_port_gets_no_credentials(
    fake: FakeUpstream, raw_upstream: StartRaw, make_mirror: MirrorFactory
) -> None:
    """A token realm on the upstream's host but another port is another origin: it gets the token
    request without the upstream credentials."""

    async def tokens(method: str, path: str, headers: dict[str, str]) -> RawAnswer:
        body = json.dumps({"token": "t0k"}).encode()
        return raw_response(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)

    realm = await raw_upstream(tokens)
    fake.token, fake.realm = "t0k", f"{realm.url}/token"
    image(fake)
    mirror = await make_mirror(upstream_username="alice", upstream_password="secret")
    assert (await mirror.get(TAG, headers=ACCEPT)).status == 200
    assert realm.seen
    assert all("Authorization" not in seen.headers for seen in realm.seen)


async def test_token_response_body_is_capped(
    fake: FakeUpstream, raw_upstream: StartRaw, make_mirror: MirrorFactory
) -> None:
    """A token server sending a 300 MB document is cut off after about 1 MiB: 502, memory not spent."""
    sent = 0

    async def huge() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"token": "'
        piece = b"x" * 65536
        while sent < 300 * 1024 * 1024:
            sent += len(piece)
            yield piece

    async def tokens(method: str, path: str, headers: dict[str, str]) -> RawAnswer:
        return huge()

    realm = await raw_upstream(tokens)
    fake.token, fake.realm = "t0k", f"{realm.url}/token"
    image(fake)
    mirror = await make_mirror()
    resp = await asyncio.wait_for(mirror.get(TAG, headers=ACCEPT), PROMPTLY)
    assert resp.status == 502
    assert "token response exceeds" in (await resp.json())["errors"][0]["detail"]
    assert sent < 32 * 1024 * 1024


async def test_huge_token_lifetime_is_no_error(fake: FakeUpstream, mirror: Client) -> None:
    """A token with `expires_in` of 10^400 is used (for at most a day), not a 500."""
    fake.token, fake.token_expires_in = "t0k", 10**400
    image(fake)
    assert (await mirror.get(TAG, headers=ACCEPT)).status == 200
    assert (await mirror.get("/v2/library/other/manifests/1", headers=ACCEPT)).status == 404


def blob_script(headers: dict[str, str], body: bytes = BLOB) -> RawScript:
    async def answer(method: str, path: str, _: dict[str, str]) -> RawAnswer:
        return raw_response(200, headers, body)

    return answer


async def test_superscript_content_length_blob_is_still_served(
    raw_upstream: StartRaw, make_mirror: MirrorFactory
) -> None:
    """A blob answered with `Content-Length: ²` (a digit to str.isdigit, not to int) is read to the end
    of the connection, verified and served."""
    upstream = await raw_upstream(blob_script({"Content-Length": "\u00b2"}))
    mirror = await make_mirror(upstream=upstream.url)
    resp = await asyncio.wait_for(mirror.get(f"/v2/library/app/blobs/{digest_of(BLOB)}"), PROMPTLY)
    assert resp.status == 200
    assert await resp.read() == BLOB


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("http://127.0.0.1:99999/cdn", id="port-99999"),
        pytest.param("http://[::1/cdn", id="broken-ipv6"),
        pytest.param("ftp://127.0.0.1/cdn", id="ftp"),
        pytest.param("http://:0/cdn", id="no-host"),
    ],
)
async def test_redirect_to_an_unusable_url_fails_every_reader_promptly(
    raw_upstream: StartRaw, make_mirror: MirrorFactory, location: str
) -> None:
    """A 307 to an unusable URL answers 502 to the blob and the manifest path alike, at once and on
    every try, and leaves no fill in flight."""

    async def answer(method: str, path: str, headers: dict[str, str]) -> RawAnswer:
        return raw_response(307, {"Location": location, "Content-Length": "0"})

    upstream = await raw_upstream(answer)
    mirror = await make_mirror(upstream=upstream.url, breaker_failures=100)
    for _ in range(2):
        blob = await asyncio.wait_for(mirror.get(f"/v2/library/app/blobs/{digest_of(BLOB)}"), PROMPTLY)
        assert blob.status == 502
        assert (await mirror.get(TAG, headers=ACCEPT)).status == 502
    assert await metric(mirror, "mirror_fills_in_flight") == "mirror_fills_in_flight 0.0"


ODD_MANIFEST_ANSWERS = {
    "superscript-length": raw_response(200, {"Content-Length": "\u00b2"}, MANIFEST),
    "negative-length": raw_response(200, {"Content-Length": "-5"}, MANIFEST),
    "two-lengths": raw_response(200, {"Content-Length": "3", "content-length": "4"}, MANIFEST),
    "huge-length": raw_response(200, {"Content-Length": "9" * 400}, MANIFEST),
    "longer-body": raw_response(200, {"Content-Length": str(len(MANIFEST) + 50)}, MANIFEST),
    "bad-digest": raw_response(200, {"Docker-Content-Digest": "sha256:zz"}, MANIFEST),
    "unknown-algorithm": raw_response(200, {"Docker-Content-Digest": "blake3:00"}, MANIFEST),
    "redirect-no-location": raw_response(307, {"Content-Length": "0"}),
    "redirect-port-0": raw_response(302, {"Location": "http://127.0.0.1:0/x", "Content-Length": "0"}),
    "redirect-relative-garbage": raw_response(302, {"Location": "//[/x", "Content-Length": "0"}),
    "challenge-garbage": raw_response(401, {"WWW-Authenticate": 'Bearer realm="\x00:99999"'}),
    "challenge-relative-realm": raw_response(401, {"WWW-Authenticate": 'Bearer realm="/token"'}),
    "challenge-no-scheme": raw_response(401, {"WWW-Authenticate": "realm=x"}),
    "status-999": raw_response(999, {"Content-Length": "0"}),
    "status-100": raw_response(100, {}),
    "bad-content-type": raw_response(200, {"Content-Type": ";;;\x7f"}, MANIFEST),
    "no-status-line": b"garbage\r\n\r\n",
    "empty": b"",
    "chunked-garbage": raw_response(200, {"Transfer-Encoding": "chunked"}, b"zz\r\nxx"),
}


@pytest.mark.parametrize("answer", ODD_MANIFEST_ANSWERS.values(), ids=ODD_MANIFEST_ANSWERS.keys())
async def test_no_upstream_answer_makes_the_manifest_path_500(
    raw_upstream: StartRaw, make_mirror: MirrorFactory, answer: bytes
) -> None:
    """Whatever the upstream answers to a manifest request, the client gets a registry answer other
    than 500."""

    async def script(method: str, path: str, headers: dict[str, str]) -> RawAnswer:
        return answer

    upstream = await raw_upstream(script)
    mirror = await make_mirror(upstream=upstream.url, breaker_failures=100)
    for reference in ("1.0", digest_of(MANIFEST)):
        resp = await asyncio.wait_for(
            mirror.get(f"/v2/library/app/manifests/{reference}", headers=ACCEPT), PROMPTLY
        )
        assert resp.status != 500, await resp.text()
        if resp.status >= 400:
            assert "errors" in await resp.json()
