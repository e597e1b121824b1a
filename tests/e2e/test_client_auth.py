"""`upstream_auth = "client"` against the real registry with token auth: cache once, authorize every pull.

The token server knows alice and carol (may pull team-a/*) and bob (may pull team-b/*); the seeder may
push anything. The mirror's Docker Hub upstream is that registry, in client mode.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.catalog import SPECS, seed_image
from tests.support.images import ImageInfo
from tests.support.mirrorproc import MirrorProcess
from tests.support.net import basic_auth, http_request, raw_request
from tests.support.registry import Registry, start_registry
from tests.support.skopeo import (
    SkopeoError,
    layout_digests,
    skopeo_copy,
    write_auth_file,
    write_registries_conf,
)
from tests.support.tokenserver import TokenServer

USERS = {"alice": "alice-secret-1", "bob": "bob-secret-2", "carol": "carol-secret-3"}
GRANTS = {"alice": ["team-a/*"], "bob": ["team-b/*"], "carol": ["team-a/*"]}


@dataclass(frozen=True)
class Private:
    """The token-auth registry, its token server and the two teams' images."""

    registry: Registry
    tokens: TokenServer
    team_a: ImageInfo  # team-a/app:1.0
    team_b: ImageInfo  # team-b/app:latest


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    workdir = tmp_path_factory.mktemp("client-auth")
    tokens = TokenServer(workdir / "tokens", credentials=("seeder", "seeder-secret"))
    registry = start_registry(workdir / "registry", auth=tokens.auth())
    try:
        team_a = seed_image(registry, SPECS["app"], workdir / "seed", name="team-a/app")
        team_b = seed_image(registry, SPECS["ociimg"], workdir / "seed", name="team-b/app")
        tokens.users.update(USERS)
        tokens.grants.update({user: list(g) for user, g in GRANTS.items()})
        yield Private(registry, tokens, team_a, team_b)
    finally:
        registry.stop()
        tokens.stop()


def client_mode(tmp_path: Path, private: Private, **env: str) -> MirrorProcess:
    # The token server listens on another port of the registry's host: another origin, so it gets
    # credentials only when listed (as an operator lists a realm on another port).
    realm = f"127.0.0.1:{private.tokens.port}"
    return MirrorProcess(
        tmp_path / "mirror",
        private.registry.url,
        env={"MIRROR_UPSTREAM_AUTH": "client", "MIRROR_AUTH_REALMS": realm, **env},
    )


def as_user(user: str) -> dict[str, str]:
    return {"Authorization": basic_auth(user, USERS[user])}


def skopeo_pull(mirror: MirrorProcess, tmp_path: Path, user: str, ref: str, dest: str) -> set[str]:
    """skopeo with the user's credentials for the mirror (auth.json), as `docker login mirror` leaves."""
    skopeo_dir = tmp_path / f"skopeo-{user}"
    write_auth_file(skopeo_dir, {mirror.host: (user, USERS[user])})
    conf = write_registries_conf(tmp_path / "registries.conf", mirror.host)
    skopeo_copy(ref, tmp_path / dest, registries_conf=conf, tmpdir=skopeo_dir, format="dir")
    return layout_digests(tmp_path / dest)


def heads(registry: Registry, since: int, repository: str) -> list[int]:
    """Statuses of the HEAD requests the registry answered for `repository` since `since`."""
    return [r.status for r in registry.requests(since) if r.method == "HEAD" and f"/{repository}/" in r.path]


def test_each_client_gets_only_what_the_upstream_grants_it(private: Private, tmp_path: Path) -> None:
    """alice pulls team-a/app with skopeo (cold, then from the cache); bob, with valid credentials of
    his own, gets 401 for that cached image, its blobs and its referrers, decided by an upstream HEAD
    with his credentials; carol (also granted team-a) gets the cached blobs after her own HEAD passed."""
    registry, image = private.registry, private.team_a
    with client_mode(tmp_path, private) as mirror:
        assert image.blobs <= skopeo_pull(mirror, tmp_path, "alice", "docker.io/team-a/app:1.0", "cold")
        cold = len(registry.blob_gets())
        mark = registry.mark()
        assert image.blobs <= skopeo_pull(mirror, tmp_path, "alice", "docker.io/team-a/app:1.0", "warm")
        assert registry.blob_gets(mark) == []
        assert registry.manifest_gets(mark) == []
        assert cold >= len(image.blobs)

        mark = registry.mark()
        refused = raw_request("GET", f"{mirror.url}/v2/team-a/app/manifests/1.0", headers=as_user("bob"))
        assert refused.status == 401
        assert json.loads(refused.body)["errors"][0]["code"] == "UNAUTHORIZED"
        assert 401 in heads(registry, mark, "team-a/app")
        layer = sorted(image.blobs)[0]
        blob = raw_request("GET", f"{mirror.url}/v2/team-a/app/blobs/{layer}", headers=as_user("bob"))
        assert blob.status == 401
        assert hashlib.sha256(blob.body).hexdigest() != layer.split(":")[1]
        referrers = f"{mirror.url}/v2/team-a/app/referrers/{image.manifest_digest}"
        assert raw_request("GET", referrers, headers=as_user("bob")).status == 401
        assert raw_request("GET", referrers, headers=as_user("alice")).status == 200
        with pytest.raises(SkopeoError):
            skopeo_pull(mirror, tmp_path, "bob", "docker.io/team-a/app:1.0", "bob-a")
        assert private.team_b.blobs <= skopeo_pull(
            mirror, tmp_path, "bob", "docker.io/team-b/app:latest", "b"
        )

        mark = registry.mark()
        served = raw_request("GET", f"{mirror.url}/v2/team-a/app/blobs/{layer}", headers=as_user("carol"))
        assert "sha256:" + hashlib.sha256(served.body).hexdigest() == layer
        assert heads(registry, mark, "team-a/app") == [401, 200]  # challenge, then with carol's token
        assert registry.blob_gets(mark) == []
        assert mirror.metric("mirror_client_authorizations_total", decision="unauthorized") >= 1
        secrets = [*USERS.values(), *(basic_auth(u, p).split()[1] for u, p in USERS.items())]
        text = mirror.log_path.read_text() + raw_request("GET", f"{mirror.url}/metrics").body.decode()
        assert not any(secret in text for secret in secrets)
        assert "Bearer ey" not in text


def test_a_decision_is_remembered_and_a_revoked_user_loses_access_within_the_ttl(
    private: Private, tmp_path: Path
) -> None:
    """Within upstream_auth_ttl a second request asks nothing upstream; once alice's grant is revoked
    at the token server, her requests are refused within that TTL."""
    ttl = 2.0
    with client_mode(tmp_path, private, MIRROR_UPSTREAM_AUTH_TTL=str(ttl)) as mirror:
        manifest = f"{mirror.url}/v2/team-a/app/manifests/1.0"
        assert raw_request("GET", manifest, headers=as_user("alice")).status == 200
        mark = private.registry.mark()
        assert raw_request("GET", manifest, headers=as_user("alice")).status == 200
        assert private.registry.requests(mark) == []
        assert mirror.metric("mirror_client_authorizations_total", source="cache", decision="allowed") == 1
        private.tokens.grants["alice"] = []
        revoked = time.monotonic()
        try:
            while raw_request("GET", manifest, headers=as_user("alice")).status == 200:
                assert time.monotonic() - revoked < ttl + 1.0, "still served after the TTL"
                time.sleep(0.1)  # polling interval while the remembered decision runs out
        finally:
            private.tokens.grants["alice"] = list(GRANTS["alice"])


def test_a_bearer_token_from_the_upstreams_realm_is_forwarded(private: Private, tmp_path: Path) -> None:
    """A client that ran the token flow itself (the mirror relays the realm) is served with its token."""
    with client_mode(tmp_path, private) as mirror:
        resp = http_request(
            "GET", f"{mirror.url}/v2/team-b/app/manifests/latest", creds=("bob", USERS["bob"])
        )
        assert resp.status == 200
        assert resp.headers["docker-content-digest"] == private.team_b.manifest_digest


def test_anonymous_clients_get_the_upstreams_challenge(private: Private, tmp_path: Path) -> None:
    """Without credentials, /v2/ and a repository answer 401 with the upstream's own Bearer challenge
    (its realm and service, the repository's scope), as docker login and containerd expect."""
    with client_mode(tmp_path, private) as mirror:
        ping = raw_request("GET", f"{mirror.url}/v2/")
        assert ping.status == 401
        assert f'realm="{private.tokens.realm}"' in ping.headers["www-authenticate"]
        resp = raw_request("GET", f"{mirror.url}/v2/team-a/app/manifests/1.0")
        assert resp.status == 401
        challenge = resp.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert f'realm="{private.tokens.realm}"' in challenge
        assert 'scope="repository:team-a/app:pull"' in challenge
        tags = raw_request("GET", f"{mirror.url}/v2/team-a/app/tags/list")
        assert tags.status == 401
        assert f'realm="{private.tokens.realm}"' in tags.headers["www-authenticate"]
