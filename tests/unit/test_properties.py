"""Property-based tests: every parser of client, config and upstream input is total (a value or the
error it promises, never another exception), and its values keep their invariants."""

from __future__ import annotations

import asyncio
import contextlib
import math
import string
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from mirror import errors, oci, routes, values
from mirror.config import UpstreamSettings
from mirror.ranges import parse_range
from mirror.upstream import fields
from mirror.upstream.auth import parse_challenge, realm_trusted
from mirror.upstream.router import Router

COMPONENT = st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+){0,2}", fullmatch=True)
NAMES = st.lists(COMPONENT, min_size=1, max_size=4).map("/".join).filter(lambda n: len(n) <= 255)
HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
HEADERISH = st.text(st.characters(codec="latin-1"), max_size=80)
ROUTER = Router(
    [
        UpstreamSettings("docker.io", "https://registry-1.docker.io", aliases=("dockerhub",)),
        UpstreamSettings("ghcr.io", "https://ghcr.io", aliases=("ghcr",)),
        UpstreamSettings("registry.local:5000", "http://10.0.0.1:5000"),
    ]
)


@given(st.text(max_size=300))
def test_parse_name_is_total(text: str) -> None:
    """Any text is a valid name (returned unchanged) or NAME_INVALID."""
    try:
        assert oci.parse_name(text) == text
    except errors.NameInvalid:
        return
    assert all(oci.COMPONENT.fullmatch(c) for c in text.split("/"))


@given(NAMES)
def test_generated_names_are_valid(name: str) -> None:
    """Names built from valid components always parse."""
    assert oci.parse_name(name) == name


@given(st.text(max_size=200))
def test_parse_reference_is_total(text: str) -> None:
    """Any text is a tag, a digest, or MANIFEST_INVALID / MANIFEST_UNKNOWN / DIGEST_INVALID."""
    try:
        found = oci.parse_reference(text)
    except (errors.ManifestInvalid, errors.ManifestUnknown, errors.DigestInvalid):
        return
    assert str(found) == text


@given(HEX64)
def test_digest_round_trips(hexpart: str) -> None:
    """A sha256 digest prints back as parsed."""
    assert str(oci.Digest.parse(f"sha256:{hexpart}")) == f"sha256:{hexpart}"


@given(st.text(max_size=200))
def test_digest_parse_is_total(text: str) -> None:
    """Any text is a digest or DIGEST_INVALID."""
    with contextlib.suppress(errors.DigestInvalid):
        oci.Digest.parse(text)


PATHS = st.one_of(
    st.text(max_size=120).map(lambda t: "/" + t),
    st.tuples(NAMES, st.sampled_from(["manifests", "blobs", "tags"]), st.text(max_size=80)).map(
        lambda p: f"/v2/{p[0]}/{p[1]}/{p[2]}"
    ),
)


def _route_table() -> web.Application:
    app = web.Application()
    routes.setup(app)
    app.freeze()
    return app


ROUTES = _route_table()


@given(PATHS, st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "PATCH", "POST"]))
def test_route_table_resolves_every_path(path: str, method: str) -> None:
    """Any path and method resolves to a handler of the route table (or aiohttp's 404/405), never an
    exception: every /v2/ path has a handler, the fallback included."""

    async def resolve() -> object:
        return await ROUTES.router.resolve(make_mocked_request(method, quote(path, safe="/:@"), app=ROUTES))

    info = asyncio.run(resolve())
    if path.startswith("/v2/") or path == "/v2":
        assert getattr(info, "http_exception", None) is None


@given(st.one_of(st.none(), HEADERISH), st.integers(min_value=0, max_value=2**63))
def test_parse_range_is_total_and_in_bounds(header: str | None, size: int) -> None:
    """Any Range header gives the whole body, a range inside it, or 416."""
    try:
        found = parse_range(header, size)
    except errors.RangeNotSatisfiable:
        return
    if found is not None:
        assert 0 <= found.start <= found.end < size
        assert found.length == found.end - found.start + 1


@given(HEADERISH)
def test_parse_challenge_is_total(header: str) -> None:
    """Any WWW-Authenticate value is a challenge of a known scheme or None."""
    found = parse_challenge(header)
    assert found is None or found.scheme in ("bearer", "basic")


@given(st.text(max_size=100), st.frozensets(st.text(max_size=20), max_size=3))
def test_realm_trusted_is_total(realm: str, extra: frozenset[str]) -> None:
    """Any realm text gives a verdict; a realm over http is never trusted for an https upstream."""
    trusted = realm_trusted("https://registry.example", realm, extra)
    if realm.lower().startswith("http:"):
        assert not trusted


@given(NAMES, st.one_of(st.none(), st.text(max_size=40)))
def test_route_table_is_total(name: str, ns: str | None) -> None:
    """Any valid name and any ns route to a configured upstream with a valid name, or NAME_UNKNOWN."""
    try:
        target = ROUTER.route(name, ns)
    except errors.NameUnknown:
        assert ns is not None
        return
    assert target.upstream in ("docker.io", "ghcr.io", "registry.local:5000")
    assert oci.parse_name(target.name) == target.name


@given(st.lists(HEADERISH, max_size=3))
def test_accepted_types_are_vendor_types(headers: list[str]) -> None:
    """Accept headers give None (anything) or only `application/vnd.` types."""
    found = oci.accepted_types(headers)
    assert found is None or (found and all(t.startswith("application/vnd.") for t in found))


@pytest.mark.parametrize(
    "parse",
    [
        values.size,
        values.count,
        values.seconds,
        values.fraction,
        values.flag,
        values.listen_address,
        values.http_url,
        values.host_list,
        values.registry_host,
        values.platform_list,
        values.image_list,
    ],
    ids=lambda p: p.__name__,
)
@given(value=st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.booleans(), st.none()))
def test_config_values_are_total(parse: object, value: object) -> None:
    """Every config value parser returns a value or raises ValueError/TypeError, whatever it is given."""
    assert callable(parse)
    with contextlib.suppress(ValueError, TypeError):
        parse(value)


@given(st.one_of(st.none(), HEADERISH, st.from_regex(r"[0-9]{1,30}", fullmatch=True)))
def test_content_length_is_total(value: str | None) -> None:
    """Any Content-Length is a length of at most 19 digits or None (`²` included)."""
    found = fields.content_length(value)
    assert found is None or 0 <= found < 10**19


@given(
    st.one_of(
        st.none(), HEADERISH, st.from_regex(r"bytes [0-9]{1,25}-[0-9]{1,25}/([0-9]{1,25}|\*)", fullmatch=True)
    )
)
def test_content_range_is_total(value: str | None) -> None:
    """Any Content-Range is (first, last + 1, size or None) of plain numbers, or None."""
    found = fields.content_range(value)
    assert found is None or (min(found[:2]) >= 0 and (found[2] is None or found[2] >= 0))


def test_content_range_reads_the_window_and_size() -> None:
    """`bytes 10-19/100` is bytes [10, 20) of 100; an unknown size is None; other units are None."""
    assert fields.content_range("bytes 10-19/100") == (10, 20, 100)
    assert fields.content_range("bytes 0-0/*") == (0, 1, None)
    assert fields.content_range("items 1-2/3") is None
    assert fields.content_range("bytes 1-²/3") is None


@given(st.one_of(st.none(), HEADERISH, HEX64.map(lambda h: f"sha256:{h}")))
def test_upstream_digest_is_total(value: str | None) -> None:
    """Any Docker-Content-Digest is a digest, None, or an upstream error (502), never DIGEST_INVALID."""
    try:
        found = fields.digest(value)
    except errors.UpstreamBadGateway:
        return
    assert found is None or oci.Digest.parse(found)


@given(st.text(string.printable, max_size=80))
def test_redirect_target_is_total(location: str) -> None:
    """Any Location is an http(s) URL with a host and a port in range, or an upstream error."""
    try:
        target = fields.redirect_target(URL("http://registry.example:5000/v2/x/blobs/y"), location)
    except errors.UpstreamBadGateway:
        return
    assert target.scheme in ("http", "https")
    assert target.raw_host
    assert target.port is not None
    assert 0 < target.port < 65536


@given(st.one_of(st.integers(), st.floats(), st.text(max_size=10), st.none(), st.booleans()))
def test_token_lifetime_is_total_and_bounded(expires_in: object) -> None:
    """Any expires_in gives a finite lifetime between 0 and a day."""
    found = fields.lifetime(expires_in, 60.0)
    assert math.isfinite(found)
    assert 0 < found <= fields.MAX_TOKEN_LIFETIME
