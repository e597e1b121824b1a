"""Per-client upstream authorization: credentials, the relayed challenge, remembered decisions."""

from __future__ import annotations

import asyncio
import base64

import pytest

from mirror import errors
from mirror.metrics import Metrics
from mirror.upstream import clientauth
from mirror.upstream.auth import Challenge, UpstreamAuth, basic_header
from mirror.upstream.clientauth import ClientAuth, ClientGate, Credentials, parse_credentials

CHALLENGE = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'
ALICE = basic_header("alice", "pw:with:colons")


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Probe:
    """A HEAD that answers what it is told and counts how often it was asked."""

    def __init__(self, error: errors.RegistryError | None = None) -> None:
        self.error = error
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


async def no_tokens(challenge: Challenge, scope: str, basic: str | None) -> tuple[str, object]:
    raise AssertionError("no token fetch expected")


def gate(clock: Clock, ttl: float = 60, denied_ttl: float = 10) -> ClientGate:
    def auth_for(username: str, password: str) -> UpstreamAuth:
        return UpstreamAuth("https://reg.example", no_tokens, username, password)

    return ClientGate("reg.example", auth_for, Metrics(), ttl, denied_ttl, clock=clock)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, Credentials("none")),
        ("", Credentials("none")),
        ("Bearer abc.def", Credentials("bearer", "Bearer abc.def")),
        ("bearer  abc", Credentials("bearer", "Bearer abc")),
        (ALICE, Credentials("basic", ALICE, "alice", "pw:with:colons")),
    ],
)
def test_parse_credentials(header: str | None, expected: Credentials) -> None:
    """No header is anonymous; Bearer keeps the token; Basic is decoded, the password may hold colons."""
    assert parse_credentials(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":pw").decode(),
        "Bearer",
        "Digest x",
    ],
)
def test_malformed_credentials_are_unauthorized(header: str) -> None:
    """An Authorization that is neither Basic nor Bearer is a 401, never a 500."""
    with pytest.raises(errors.Unauthorized):
        parse_credentials(header)


def test_credentials_repr_shows_no_secret() -> None:
    """Neither the password nor the header it travels in appear in the repr."""
    shown = repr(parse_credentials(ALICE)) + repr(parse_credentials("Bearer s3cr3t-token"))
    assert "pw:with:colons" not in shown
    assert ALICE.split()[1] not in shown
    assert "s3cr3t" not in shown


async def test_bearer_client_is_sent_as_is_and_refusal_relays_the_challenge() -> None:
    """A bearer client's token goes upstream unchanged; a 401 relays the upstream's own challenge."""
    auth = ClientAuth(Credentials("bearer", "Bearer t0k"))
    assert await auth.authorization("repository:a/b:pull") == "Bearer t0k"
    assert await auth.answer(CHALLENGE, "repository:a/b:pull", "Bearer t0k") is None
    refused = auth.refused(CHALLENGE)
    assert refused.status == 401
    assert refused.headers == {"WWW-Authenticate": CHALLENGE}


async def test_basic_client_credentials_fetch_a_token_for_the_challenge() -> None:
    """Basic credentials answer a bearer challenge at a trusted realm with the client's own Basic."""
    sent: list[str | None] = []

    async def tokens(challenge: Challenge, scope: str, basic: str | None) -> tuple[str, object]:
        sent.append(basic)
        return "tok", 300

    realms = frozenset({"auth.example"})
    auth = ClientAuth(
        parse_credentials(ALICE),
        UpstreamAuth("https://reg.example", tokens, "alice", "pw:with:colons", realms),
    )
    assert await auth.answer(CHALLENGE, "repository:a/b:pull", None) == "Bearer tok"
    assert sent == [ALICE]


async def test_realm_refusing_basic_credentials_relays_the_registry_challenge() -> None:
    """When the token realm refuses the client's Basic credentials, the client gets the registry's
    challenge (to run the flow itself), not the mirror's own Basic one."""

    async def refuse(challenge: Challenge, scope: str, basic: str | None) -> tuple[str, object]:
        raise errors.Unauthorized("no", headers={"WWW-Authenticate": 'Basic realm="mirror"'})

    auth = ClientAuth(parse_credentials(ALICE), UpstreamAuth("https://reg.example", refuse, "alice", "pw"))
    with pytest.raises(errors.Unauthorized) as caught:
        await auth.answer(CHALLENGE, "repository:a/b:pull", None)
    assert caught.value.headers == {"WWW-Authenticate": CHALLENGE}


async def test_allowed_decision_is_remembered_for_the_ttl() -> None:
    """One HEAD per (credentials, repository) within the TTL; after it, the upstream is asked again."""
    clock, probe = Clock(), Probe()
    g = gate(clock, ttl=60)
    await g.admit(ALICE, "a/b", probe)
    clock.now += 59
    await g.admit(ALICE, "a/b", probe)
    assert probe.calls == 1
    clock.now += 2
    await g.admit(ALICE, "a/b", probe)
    assert probe.calls == 2


async def test_denial_is_remembered_for_the_shorter_ttl() -> None:
    """A 401 or 403 is remembered for denied_ttl, and raised again from memory meanwhile."""
    clock = Clock()
    g = gate(clock, ttl=60, denied_ttl=10)
    for error in (errors.Unauthorized("no"), errors.Denied("no")):
        probe = Probe(error)
        name = f"repo-{error.code.lower()}"
        for _ in range(2):
            with pytest.raises(type(error)):
                await g.admit(ALICE, name, probe)
        assert probe.calls == 1
        clock.now += 11
        with pytest.raises(type(error)):
            await g.admit(ALICE, name, probe)
        assert probe.calls == 2


@pytest.mark.parametrize(
    "error", [errors.ManifestUnknown("gone"), errors.UpstreamUnavailable("down"), errors.BlobUnknown("x")]
)
async def test_other_answers_are_not_remembered(error: errors.RegistryError) -> None:
    """Not found and unavailable say nothing about the client's rights: asked again every time."""
    probe = Probe(error)
    g = gate(Clock())
    for _ in range(2):
        with pytest.raises(type(error)):
            await g.admit(ALICE, "a/b", probe)
    assert probe.calls == 2


async def test_decisions_are_per_credentials_and_repository() -> None:
    """Another client, or another repository of the same client, is asked for separately."""
    probe = Probe()
    g = gate(Clock())
    await g.admit(ALICE, "a/b", probe)
    await g.admit(basic_header("bob", "pw"), "a/b", probe)
    await g.admit(ALICE, "a/c", probe)
    await g.admit(None, "a/b", probe)
    assert probe.calls == 4


async def test_concurrent_requests_of_one_client_share_one_head() -> None:
    """Requests of one client for one repository arriving together wait for one HEAD."""
    release = asyncio.Event()
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    g = gate(Clock())
    waiting = [asyncio.create_task(g.admit(ALICE, "a/b", slow)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*waiting)
    assert calls == 1


async def test_remembered_decisions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_DECISIONS the least recently used decision is dropped and asked for again."""
    monkeypatch.setattr(clientauth, "MAX_DECISIONS", 2)
    probe = Probe()
    g = gate(Clock())
    for name in ("r1", "r2", "r3", "r1"):
        await g.admit(ALICE, name, probe)
    assert probe.calls == 4


async def test_admit_sets_the_clients_credentials_for_its_upstream_only() -> None:
    """After admit, this task's upstream requests to that upstream use the client's credentials;
    other upstreams still use their own."""

    async def request() -> tuple[ClientAuth | None, ClientAuth | None]:
        await gate(Clock()).admit("Bearer t", "a/b", Probe())
        return clientauth.current("reg.example"), clientauth.current("other.example")

    mine, other = await asyncio.create_task(request())
    assert mine is not None
    assert await mine.authorization("x") == "Bearer t"
    assert other is None
    assert clientauth.current("reg.example") is None  # nothing leaks into the caller's context


async def test_basic_clients_token_state_is_renewed_after_the_ttl() -> None:
    """A Basic client's tokens are not reused past the TTL, so a revocation takes effect then."""
    clock = Clock()
    g = gate(clock, ttl=60)

    async def state() -> ClientAuth | None:
        g.use(ALICE)
        return clientauth.current("reg.example")

    first = await asyncio.create_task(state())
    assert await asyncio.create_task(state()) is first
    clock.now += 61
    assert await asyncio.create_task(state()) is not first


async def test_client_token_state_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_CLIENTS distinct credentials, the least recently seen client's state is dropped."""
    monkeypatch.setattr(clientauth, "MAX_CLIENTS", 2)
    g = gate(Clock())

    async def state(header: str) -> ClientAuth | None:
        g.use(header)
        return clientauth.current("reg.example")

    first = await asyncio.create_task(state(ALICE))
    for user in ("bob", "carol"):
        await asyncio.create_task(state(basic_header(user, "pw")))
    assert await asyncio.create_task(state(ALICE)) is not first
