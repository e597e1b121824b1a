"""Unit tests for mirror.upstream.auth: challenges, realm trust, token lifetimes and UpstreamAuth caching."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from mirror.upstream import auth
from mirror.upstream.auth import Challenge, UpstreamAuth, basic_header, parse_challenge, realm_trusted

HUB = "https://registry-1.docker.io"
HUB_CHALLENGE = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    'scope="repository:library/alpine:pull"'
)
UPSTREAM = "https://registry.example"
OWN_REALM = 'Bearer realm="https://registry.example/token",service="registry.example"'
FOREIGN_REALM = 'Bearer realm="https://tokens.evil.example/token",service="registry.example"'
SCOPE = "repository:library/alpine:pull"


# --- parse_challenge ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            HUB_CHALLENGE,
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:library/alpine:pull",
                },
            ),
            id="docker-hub",
        ),
        pytest.param('Basic realm="x"', Challenge("basic", {"realm": "x"}), id="basic"),
        pytest.param('BASIC Realm="x"', Challenge("basic", {"realm": "x"}), id="case-insensitive"),
        pytest.param("Bearer", Challenge("bearer", {}), id="bearer-no-params"),
        pytest.param(
            '  Bearer realm = "r" , service=svc ',
            Challenge("bearer", {"realm": "r", "service": "svc"}),
            id="whitespace-and-token-value",
        ),
        pytest.param(
            r'Bearer realm="a \"quoted\" realm"',
            Challenge("bearer", {"realm": 'a "quoted" realm'}),
            id="escaped-quotes",
        ),
        pytest.param(
            'Bearer realm="r",service="s",scope="repository:a/b:pull,push",error="insufficient_scope"',
            Challenge(
                "bearer",
                {
                    "realm": "r",
                    "service": "s",
                    "scope": "repository:a/b:pull,push",
                    "error": "insufficient_scope",
                },
            ),
            id="insufficient-scope-with-comma-in-scope",
        ),
        pytest.param('Digest realm="x", nonce="y"', None, id="digest-unknown"),
        pytest.param("Negotiate abc", None, id="negotiate-unknown"),
        pytest.param("", None, id="empty"),
        pytest.param('realm="x"', None, id="no-scheme"),
    ],
)
def test_parse_challenge(header: str, expected: Challenge | None) -> None:
    """A WWW-Authenticate header parses into a lower-case scheme and its parameters, or None."""
    assert parse_challenge(header) == expected


def test_challenge_realm_defaults_empty() -> None:
    """A challenge without a realm parameter reports an empty realm."""
    challenge = parse_challenge("Bearer service=x")
    assert challenge is not None
    assert challenge.realm == ""


def test_parse_challenge_empty_quoted_value() -> None:
    """An empty quoted parameter value parses as the empty string."""
    assert parse_challenge('Bearer realm="https://r.example/token",service=""') == Challenge(
        "bearer", {"realm": "https://r.example/token", "service": ""}
    )


def test_parse_challenge_unescapes_backslash() -> None:
    """A quoted-pair backslash-backslash in a parameter value becomes a single backslash."""
    challenge = parse_challenge(r'Basic realm="a\\b"')
    assert challenge == Challenge("basic", {"realm": "a\\b"})


# --- basic_header -------------------------------------------------------------------------------


def test_basic_header_encodes_credentials() -> None:
    """basic_header is `Basic base64(user:password)`."""
    value = basic_header("bob", "pa:ss")
    assert value == "Basic " + base64.b64encode(b"bob:pa:ss").decode()


# --- realm_trusted ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "realm", "extra", "expected"),
    [
        pytest.param(UPSTREAM, "https://registry.example/token", frozenset(), True, id="same-host"),
        pytest.param(UPSTREAM, "https://REGISTRY.example/token", frozenset(), True, id="same-host-case"),
        pytest.param(
            UPSTREAM, "https://registry.example:8443/t", frozenset(), False, id="same-host-other-port"
        ),
        pytest.param(UPSTREAM, "https://registry.example:443/t", frozenset(), True, id="explicit-port"),
        pytest.param(
            UPSTREAM,
            "https://registry.example:8443/t",
            frozenset({"registry.example:8443"}),
            True,
            id="listed-host-and-port",
        ),
        pytest.param(
            UPSTREAM,
            "https://tokens.example:8443/t",
            frozenset({"tokens.example"}),
            False,
            id="listed-host-other-port",
        ),
        pytest.param(
            UPSTREAM, "https://registry.example:99999/t", frozenset(), False, id="port-out-of-range"
        ),
        pytest.param(HUB, "https://auth.docker.io/token", frozenset(), True, id="docker-hub-builtin"),
        pytest.param(
            UPSTREAM, "https://auth.docker.io/token", frozenset(), False, id="hub-realm-other-upstream"
        ),
        pytest.param(UPSTREAM, "https://tokens.evil.example/t", frozenset(), False, id="other-host"),
        pytest.param(UPSTREAM, "https://sub.registry.example/t", frozenset(), False, id="subdomain"),
        pytest.param(
            UPSTREAM, "https://registry.example@evil.example/t", frozenset(), False, id="userinfo-trick"
        ),
        pytest.param(
            UPSTREAM, "https://tokens.example/t", frozenset({"tokens.example"}), True, id="configured-extra"
        ),
        pytest.param(
            UPSTREAM, "http://registry.example/token", frozenset(), False, id="https-upstream-http-realm"
        ),
        pytest.param(HUB, "http://auth.docker.io/token", frozenset(), False, id="hub-http-realm"),
        pytest.param(
            UPSTREAM, "http://tokens.example/t", frozenset({"tokens.example"}), False, id="extra-over-http"
        ),
        pytest.param(
            "http://localhost:5000", "http://localhost:5000/t", frozenset(), True, id="http-upstream"
        ),
        pytest.param(
            "http://localhost:5000", "http://localhost:5001/t", frozenset(), False, id="http-other-port"
        ),
        pytest.param(
            "http://localhost:5000", "https://localhost:5000/t", frozenset(), False, id="other-scheme"
        ),
        pytest.param(UPSTREAM, "", frozenset(), False, id="empty-realm"),
        pytest.param(UPSTREAM, "/token", frozenset(), False, id="relative-realm"),
    ],
)
def test_realm_trusted(upstream: str, realm: str, extra: frozenset[str], expected: bool) -> None:
    """Credentials go only to the upstream's origin, Docker Hub's auth host, or listed realms, over https."""
    assert realm_trusted(upstream, realm, extra) is expected


# --- token_validity -----------------------------------------------------------------------------


@pytest.mark.parametrize("expires_in", [None, "300", 0, -5, float("nan"), True, float("-inf")])
def test_token_validity_default_when_absent_or_unusable(expires_in: object) -> None:
    """Without a usable expires_in the token is treated as valid for the 60 s default, minus a margin."""
    assert auth.token_validity(expires_in, 1000.0) == auth.token_validity(60, 1000.0)


def test_token_validity_default_is_60_seconds_minus_margin() -> None:
    """The 60 s default lifetime ends before 60 s have passed but after most of it."""
    until = auth.token_validity(None, 1000.0)
    assert 1030.0 <= until < 1060.0


def test_token_validity_refreshes_before_expiry() -> None:
    """A 300 s token is used until shortly before 300 s, not up to it."""
    until = auth.token_validity(300, 1000.0)
    assert 1250.0 <= until < 1300.0


@pytest.mark.parametrize("expires_in", [1, 5, 10, 30, 60, 300, 3600, 0.5])
def test_token_validity_is_in_the_future_and_before_expiry(expires_in: float) -> None:
    """Any positive lifetime gives a validity strictly between now and now + expires_in."""
    until = auth.token_validity(expires_in, 1000.0)
    assert 1000.0 < until < 1000.0 + expires_in


@pytest.mark.parametrize("expires_in", [10**400, float("inf"), 10**9])
def test_token_validity_of_huge_lifetimes_is_capped(expires_in: object) -> None:
    """A lifetime of 10^400, infinity or decades is cut to a day, never an OverflowError."""
    until = auth.token_validity(expires_in, 1000.0)
    assert until == auth.token_validity(24 * 3600, 1000.0) < 1000.0 + 24 * 3600


# --- UpstreamAuth -------------------------------------------------------------------------------


@dataclass
class FakeTokenServer:
    """A fetch_token stand-in that records each call and hands out tok1, tok2, ...

    With `gated`, each fetch sets `started` and then waits for `release`.
    """

    expires_in: object = 300
    gated: bool = False
    calls: list[tuple[Challenge, str, str | None]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, challenge: Challenge, scope: str, basic: str | None) -> tuple[str, object]:
        self.calls.append((challenge, scope, basic))
        self.started.set()
        if self.gated:
            await self.release.wait()
        return f"tok{len(self.calls)}", self.expires_in


async def test_concurrent_answers_share_one_fetch() -> None:
    """Ten concurrent answer() calls for the same scope cause one token fetch and get the same token."""
    server = FakeTokenServer()
    upstream_auth = UpstreamAuth(HUB, server)
    results = await asyncio.gather(*(upstream_auth.answer(HUB_CHALLENGE, SCOPE, None) for _ in range(10)))
    assert (len(server.calls), set(results)) == (1, {"Bearer tok1"})


async def test_concurrent_answers_wait_on_inflight_fetch() -> None:
    """Callers for a scope whose token fetch is in flight all wait for that one fetch."""
    server = FakeTokenServer(gated=True)
    upstream_auth = UpstreamAuth(HUB, server)
    callers = [asyncio.ensure_future(upstream_auth.answer(HUB_CHALLENGE, SCOPE, None)) for _ in range(10)]
    await server.started.wait()
    assert not any(caller.done() for caller in callers)
    server.release.set()
    results = await asyncio.gather(*callers)
    assert (len(server.calls), set(results)) == (1, {"Bearer tok1"})


async def test_answer_uses_challenge_scope() -> None:
    """The scope in the challenge, not the caller's guess, is what the token is fetched for."""
    server = FakeTokenServer()
    await UpstreamAuth(HUB, server).answer(HUB_CHALLENGE, "repository:other:pull", None)
    assert server.calls[0][1] == SCOPE


async def test_answer_falls_back_to_caller_scope() -> None:
    """A challenge without a scope parameter fetches a token for the caller's scope."""
    server = FakeTokenServer()
    await UpstreamAuth(UPSTREAM, server).answer(OWN_REALM, "repository:a/b:pull", None)
    assert server.calls[0][1] == "repository:a/b:pull"


async def test_authorization_none_before_challenge() -> None:
    """Before any challenge, authorization() sends nothing and fetches nothing."""
    server = FakeTokenServer()
    assert (await UpstreamAuth(HUB, server).authorization(SCOPE), server.calls) == (None, [])


async def test_cached_token_reused_by_authorization() -> None:
    """After a bearer answer, authorization() for the same scope reuses the cached token without a fetch."""
    server = FakeTokenServer()
    upstream_auth = UpstreamAuth(HUB, server)
    await upstream_auth.answer(HUB_CHALLENGE, SCOPE, None)
    assert await upstream_auth.authorization(SCOPE) == "Bearer tok1"
    assert len(server.calls) == 1


async def test_authorization_fetches_other_scope_preemptively() -> None:
    """After one bearer challenge, authorization() for a new scope fetches a token for that scope."""
    server = FakeTokenServer()
    upstream_auth = UpstreamAuth(HUB, server)
    await upstream_auth.answer(HUB_CHALLENGE, SCOPE, None)
    other = "repository:library/busybox:pull"
    assert await upstream_auth.authorization(other) == "Bearer tok2"
    assert [call[1] for call in server.calls] == [SCOPE, other]


async def test_rejected_token_is_refetched() -> None:
    """A 401 for the cached token (passed as `sent`) drops it and fetches a new one."""
    server = FakeTokenServer()
    upstream_auth = UpstreamAuth(HUB, server)
    await upstream_auth.answer(HUB_CHALLENGE, SCOPE, None)
    assert await upstream_auth.answer(HUB_CHALLENGE, SCOPE, "Bearer tok1") == "Bearer tok2"
    assert await upstream_auth.authorization(SCOPE) == "Bearer tok2"


async def test_answer_keeps_cached_token_not_sent() -> None:
    """A 401 for a request that did not carry the cached token reuses the cached token."""
    server = FakeTokenServer()
    upstream_auth = UpstreamAuth(HUB, server)
    await upstream_auth.answer(HUB_CHALLENGE, SCOPE, None)
    assert await upstream_auth.answer(HUB_CHALLENGE, SCOPE, "Bearer somebody-elses") == "Bearer tok1"
    assert len(server.calls) == 1


async def test_expired_token_is_refetched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a token's validity has passed, authorization() fetches a new one."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=lambda: clock.now))
    server = FakeTokenServer(expires_in=300)
    upstream_auth = UpstreamAuth(HUB, server)
    await upstream_auth.answer(HUB_CHALLENGE, SCOPE, None)
    clock.now = 1000.0 + 299
    assert await upstream_auth.authorization(SCOPE) == "Bearer tok2"


async def test_token_valid_until_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Well within its lifetime, a token is reused without a fetch."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=lambda: clock.now))
    server = FakeTokenServer(expires_in=300)
    upstream_auth = UpstreamAuth(HUB, server)
    await upstream_auth.answer(HUB_CHALLENGE, SCOPE, None)
    clock.now = 1000.0 + 200
    assert (await upstream_auth.authorization(SCOPE), len(server.calls)) == ("Bearer tok1", 1)


async def test_basic_challenge_with_credentials() -> None:
    """A Basic challenge is answered with the Basic header when credentials are configured."""
    server = FakeTokenServer()
    upstream_auth = UpstreamAuth(UPSTREAM, server, "bob", "secret")
    assert await upstream_auth.answer('Basic realm="r"', SCOPE, None) == basic_header("bob", "secret")
    assert server.calls == []


@pytest.mark.parametrize(("username", "password"), [(None, None), ("bob", None), (None, "secret")])
async def test_basic_challenge_without_credentials(username: str | None, password: str | None) -> None:
    """A Basic challenge has no answer when username and password are not both configured."""
    upstream_auth = UpstreamAuth(UPSTREAM, FakeTokenServer(), username, password)
    assert await upstream_auth.answer('Basic realm="r"', SCOPE, None) is None


async def test_basic_challenge_after_basic_rejected() -> None:
    """A Basic challenge for a request that already sent the credentials (rejected) has no answer."""
    upstream_auth = UpstreamAuth(UPSTREAM, FakeTokenServer(), "bob", "secret")
    assert await upstream_auth.answer('Basic realm="r"', SCOPE, basic_header("bob", "secret")) is None


async def test_basic_challenge_enables_preemptive_basic() -> None:
    """After a Basic challenge, authorization() sends the Basic header up front."""
    upstream_auth = UpstreamAuth(UPSTREAM, FakeTokenServer(), "bob", "secret")
    await upstream_auth.answer('Basic realm="r"', SCOPE, None)
    assert await upstream_auth.authorization("repository:x:pull") == basic_header("bob", "secret")


async def test_unknown_challenge_has_no_answer() -> None:
    """An unknown auth scheme has no answer and fetches nothing."""
    server = FakeTokenServer()
    assert (await UpstreamAuth(UPSTREAM, server).answer('Digest realm="x"', SCOPE, None), server.calls) == (
        None,
        [],
    )


@pytest.mark.parametrize(
    ("upstream", "header"),
    [
        pytest.param(HUB, HUB_CHALLENGE, id="docker-hub-builtin"),
        pytest.param(UPSTREAM, OWN_REALM, id="same-host"),
    ],
)
async def test_credentials_sent_to_trusted_realm(upstream: str, header: str) -> None:
    """fetch_token receives the Basic header as its 3rd argument for a trusted realm."""
    server = FakeTokenServer()
    await UpstreamAuth(upstream, server, "bob", "secret").answer(header, SCOPE, None)
    assert server.calls[0][2] == basic_header("bob", "secret")


@pytest.mark.parametrize(
    ("upstream", "header"),
    [
        pytest.param(UPSTREAM, FOREIGN_REALM, id="other-host"),
        pytest.param(UPSTREAM, 'Bearer realm="http://registry.example/token"', id="http-realm"),
        pytest.param(UPSTREAM, HUB_CHALLENGE, id="hub-realm-for-other-upstream"),
    ],
)
async def test_credentials_withheld_from_untrusted_realm(upstream: str, header: str) -> None:
    """fetch_token receives None instead of credentials for an untrusted realm."""
    server = FakeTokenServer()
    await UpstreamAuth(upstream, server, "bob", "secret").answer(header, SCOPE, None)
    assert server.calls[0][2] is None


async def test_credentials_sent_to_configured_realm() -> None:
    """A realm host configured as trusted receives the credentials."""
    server = FakeTokenServer()
    upstream_auth = UpstreamAuth(UPSTREAM, server, "bob", "secret", frozenset({"tokens.evil.example"}))
    await upstream_auth.answer(FOREIGN_REALM, SCOPE, None)
    assert server.calls[0][2] == basic_header("bob", "secret")


async def test_anonymous_token_fetch_without_credentials() -> None:
    """Without configured credentials, fetch_token gets None even for a trusted realm."""
    server = FakeTokenServer()
    await UpstreamAuth(HUB, server).answer(HUB_CHALLENGE, SCOPE, None)
    assert server.calls[0][2] is None


async def test_fetch_failure_propagates_and_is_not_cached() -> None:
    """A failing token fetch raises to the caller and the next answer fetches again."""
    attempts: list[str] = []

    async def flaky(challenge: Challenge, scope: str, basic: str | None) -> tuple[str, object]:
        attempts.append(scope)
        if len(attempts) == 1:
            raise ConnectionError("token server down")
        return "good", 300

    upstream_auth = UpstreamAuth(HUB, flaky)
    with pytest.raises(ConnectionError):
        await upstream_auth.answer(HUB_CHALLENGE, SCOPE, None)
    assert await upstream_auth.answer(HUB_CHALLENGE, SCOPE, None) == "Bearer good"


async def test_close_cancels_inflight_fetch() -> None:
    """close() cancels a token fetch still in flight."""
    server = FakeTokenServer(gated=True)
    upstream_auth = UpstreamAuth(HUB, server)
    pending = asyncio.ensure_future(upstream_auth.answer(HUB_CHALLENGE, SCOPE, None))
    await server.started.wait()
    await upstream_auth.close()
    with pytest.raises(asyncio.CancelledError):
        await pending
