"""The Coordinator: every Redis operation of the shared mode, behind short timeouts and a breaker.

Redis holds only caches and hints (tags, manifests, who holds or is filling which blob, fill leases), so
every operation has a harmless default: when Redis is slow, down, empty or failing over, an operation
returns that default within `redis_timeout` and the replica carries on alone; after a few consecutive
failures the breaker (the upstreams' one, `mirror.upstream.breaker`) keeps requests away from Redis for
`redis_cooldown` seconds, so no request pays a timeout and nothing retries in a storm; then one probe at
a time checks whether Redis is back, and coordination resumes without a restart.

Leases and hints go through Lua scripts, so each decision is one round trip. Redis Cluster is not
supported (one server, or Sentinel).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mirror.cluster.redisurl import RedisUrl
from mirror.metrics import Metrics
from mirror.upstream.breaker import Breaker, State

log = structlog.get_logger("mirror.cluster")
T = TypeVar("T")

#: Prefix of every key, so the mirror can share a Redis with other programs.
PREFIX = "mirror:"
#: Consecutive failed Redis operations that open the breaker.
BREAKER_FAILURES = 3
#: Connections to Redis per replica: operations are short, so a few carry the load.
MAX_CONNECTIONS = 32
#: Hints returned per claim: the first peers holding a blob (each dropped after one failure).
MAX_HINTS = 4

# KEYS: held set, lease. ARGV: now (ms), my URL, my token, lease (ms), max hints.
_CLAIM = """
local held = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[5]) + 1)
local found = {'held'}
for _, url in ipairs(held) do
  if url ~= ARGV[2] and #found <= tonumber(ARGV[5]) then table.insert(found, url) end
end
if #found > 1 then return found end
local owner = redis.call('GET', KEYS[2])
if not owner then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return {'mine'}
end
return {'lease', owner}
"""
# KEYS: lease. ARGV: token, lease (ms).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lock. ARGV: token.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lease, held set. ARGV: token, my URL, hint expiry (ms since epoch), hint TTL (ms), held (0/1).
_RELEASE = """
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """Where a replica lacking a blob should get it: `peers` that hold it; else `owner`, the URL of the
    replica filling it (lease held elsewhere); else `token` (this replica holds the lease and fills it
    from upstream); all empty when Redis could not be asked (go upstream alone)."""

    peers: tuple[str, ...] = ()
    owner: str | None = None
    token: str | None = None


def _client(url: RedisUrl, timeout: float) -> aioredis.Redis:
    common: dict[str, Any] = {
        "db": url.db,
        "username": url.username,
        "password": url.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),  # no retries: a failure is answered by the default at once
        "max_connections": MAX_CONNECTIONS,
        "health_check_interval": 0,
    }
    if url.sentinel:
        assert url.master is not None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel untyped
            list(url.hosts),
            sentinel_kwargs={
                "password": url.password,
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "retry": Retry(NoBackoff(), 0),
            },
            **common,
        )
        master: aioredis.Redis = sentinel.master_for(url.master)
        return master
    (host, port), *_ = url.hosts
    return aioredis.Redis(host=host, port=port, ssl=url.tls, **common)


class Coordinator:
    """One replica's view of Redis; an async context manager owning the client."""

    def __init__(
        self,
        url: RedisUrl,
        advertise_url: str,
        metrics: Metrics,
        *,
        timeout: float,
        cooldown: float,
        lease_ttl: float,
        hint_ttl: float,
    ) -> None:
        self.url = url
        self.me = advertise_url
        self._metrics = metrics
        self._timeout = timeout
        self.lease_ttl = lease_ttl
        self.hint_ttl = hint_ttl
        self.breaker = Breaker(BREAKER_FAILURES, cooldown)
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._last_failed = False  # the latest operation failed (before the breaker opens, too)
        metrics.redis_breaker_state.set(State.CLOSED)

    async def __aenter__(self) -> Coordinator:
        # In a thread: redis-py reads its package metadata from disk when a client is made.
        self._redis = await asyncio.to_thread(_client, self.url, self._timeout)
        self._scripts = {
            name: self._redis.register_script(body)
            for name, body in (
                ("claim", _CLAIM),
                ("renew", _RENEW),
                ("release", _RELEASE),
                ("unlock", _UNLOCK),
            )
        }
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    # -- the guard every operation goes through -----------------------------------------------

    async def _op(self, name: str, call: Callable[[aioredis.Redis], Awaitable[T]], default: T) -> T:
        """`call(redis)` within the timeout, or `default` when Redis fails or the breaker is open."""
        assert self._redis is not None, "Coordinator used outside its context"
        if not self.breaker.allow(time.monotonic()):
            self._metrics.redis_operations.labels(name, "skipped").inc()
            return default
        self._metrics.redis_breaker_state.set(self.breaker.state)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                found = await call(self._redis)
        except (RedisError, TimeoutError, OSError) as exc:
            self._last_failed = True
            self._failed(name, exc)
            return default
        except BaseException:
            self.breaker.probing = False  # cancelled: the probe slot is free again
            raise
        self._last_failed = False
        self._metrics.redis_duration.labels(name).observe(time.monotonic() - started)
        self._metrics.redis_operations.labels(name, "ok").inc()
        if self.breaker.succeeded() is not State.CLOSED:
            log.info("redis_breaker_closed", redis=str(self.url))
        self._metrics.redis_breaker_state.set(State.CLOSED)
        return found

    def _failed(self, name: str, exc: BaseException) -> None:
        self._metrics.redis_operations.labels(name, "error").inc()
        before = self.breaker.failed(time.monotonic())
        self._metrics.redis_breaker_state.set(self.breaker.state)
        if self.breaker.state is State.OPEN and before is not State.OPEN:
            log.warning(
                "redis_breaker_opened",
                redis=str(self.url),
                op=name,
                detail=f"{type(exc).__name__}: {exc}"[:300],
                cooldown=self.breaker.cooldown,
            )

    def status(self) -> dict[str, object]:
        """For /readyz: Redis is reported, never a reason to be unready."""
        state = self.breaker.state
        healthy = state is State.CLOSED and not self._last_failed
        return {
            "url": str(self.url),
            "breaker": state.name.lower(),
            "status": "ok" if healthy else "degraded",
        }

    # -- shared manifests and tags --------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        found = await self._op("get", lambda r: r.get(PREFIX + key), None)
        return found if isinstance(found, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._op("set", lambda r: r.set(PREFIX + key, value, px=int(ttl * 1000)), None)

    async def lock(self, key: str, ttl: float) -> tuple[str | None, bool]:
        """A short lock on `key`: (its token, False) when taken, (None, True) when another replica
        holds it, (None, False) when Redis could not be asked."""
        token = secrets.token_hex(8)

        async def take(r: aioredis.Redis) -> bool | None:
            return bool(await r.set(f"{PREFIX}lock:{key}", token, nx=True, px=int(ttl * 1000)))

        found = await self._op("lock", take, None)
        if found is None:
            return None, False
        return (token, False) if found else (None, True)

    async def unlock(self, key: str, token: str) -> None:
        keys = [f"{PREFIX}lock:{key}"]
        await self._op("unlock", lambda r: self._scripts["unlock"](keys=keys, args=[token]), 0)

    # -- fills: leases and hints ----------------------------------------------------------------

    def _held(self, digest: str) -> str:
        return f"{PREFIX}held:{digest}"

    def _lease(self, digest: str) -> str:
        return f"{PREFIX}lease:{digest}"

    async def claim(self, digest: str) -> Claim:
        """Peers holding `digest`, else the replica filling it, else the lease for this replica."""
        token = f"{self.me} {secrets.token_hex(8)}"
        keys = [self._held(digest), self._lease(digest)]
        args = [int(time.time() * 1000), self.me, token, int(self.lease_ttl * 1000), MAX_HINTS]
        found = await self._op("claim", lambda r: self._scripts["claim"](keys=keys, args=args), None)
        if not isinstance(found, list) or not found:
            return Claim()
        kind, *rest = [v.decode() if isinstance(v, bytes) else str(v) for v in found]
        if kind == "held":
            return Claim(peers=tuple(rest))
        if kind == "mine":
            return Claim(token=token)
        owner = rest[0].partition(" ")[0] if rest else ""
        return Claim(owner=owner if owner and owner != self.me else None)

    async def renew(self, digest: str, token: str) -> bool:
        """Extend this replica's lease; False if it was lost (expired, or Redis restarted empty)."""
        keys, args = [self._lease(digest)], [token, int(self.lease_ttl * 1000)]
        return bool(await self._op("renew", lambda r: self._scripts["renew"](keys=keys, args=args), 0))

    async def release(self, digest: str, token: str, held: bool) -> None:
        """Give up this replica's lease; with `held`, announce in the same step that it now holds the
        blob, so no replica finds neither a lease nor a holder in between."""
        keys = [self._lease(digest), self._held(digest)]
        until = int((time.time() + self.hint_ttl) * 1000)
        args = [token, self.me, until, int(self.hint_ttl * 1000), 1 if held else 0]
        await self._op("release", lambda r: self._scripts["release"](keys=keys, args=args), 0)

    async def register(self, digests: Iterable[str]) -> int:
        """Announce, in one pipeline, that this replica holds `digests` (for `hint_ttl` seconds)."""
        wanted = list(digests)
        if not wanted:
            return 0
        until = int((time.time() + self.hint_ttl) * 1000)
        ttl_ms = int(self.hint_ttl * 1000)

        async def send(r: aioredis.Redis) -> int:
            pipe = r.pipeline(transaction=False)
            for digest in wanted:
                pipe.zadd(self._held(digest), {self.me: until})
                pipe.pexpire(self._held(digest), ttl_ms)
            await pipe.execute()
            return len(wanted)

        return await self._op("register", send, 0)

    async def heartbeat(self) -> bool:
        """One cheap operation; True when Redis had lost the marker key (new, or restarted empty)."""
        return bool(await self._op("heartbeat", lambda r: r.set(f"{PREFIX}epoch", b"1", nx=True), None))

    async def drop(self, digest: str, peer: str) -> None:
        """Forget that `peer` holds `digest` (it failed or lied once)."""
        await self._op("drop", lambda r: r.zrem(self._held(digest), peer), 0)
