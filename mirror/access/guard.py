"""The guard: checks a request's credentials against the htpasswd and tokens files, fast on repeats.

bcrypt is slow on purpose (a few to hundreds of milliseconds a check). A verified Basic pair is
remembered for `auth_cache_ttl` seconds under a keyed hash of the credentials (the key is random per
process, so the cache holds nothing an attacker could test passwords against), concurrent checks of the
same pair share one bcrypt run, and bcrypt runs in BCRYPT_THREADS threads, off the event loop. Reloading
a file empties the cache, so a removed user or changed password stops working at the next request.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import structlog

from mirror import filewatch
from mirror.access.credentials import Basic, Bearer, Malformed, bcrypt_password, parse_authorization
from mirror.access.files import Htpasswd, parse_htpasswd, parse_tokens, token_digest
from mirror.config import ConfigError
from mirror.metrics import Metrics
from mirror.singleflight import SingleFlight

log = structlog.get_logger("mirror.access")

#: Threads bcrypt may use: two cores' worth at most, so a storm of wrong passwords cannot take every core.
BCRYPT_THREADS = 2
#: Verified pairs remembered at most (oldest forgotten first): bounded whatever the number of clients.
CACHE_ENTRIES = 4096


@dataclass(frozen=True)
class Identity:
    """Who a request comes from: a Basic user or a token's name, and how it proved it."""

    name: str
    method: str  # basic | token


class Refused(Exception):
    """Credentials missing, malformed or wrong; `reason` is a metrics label, `user` a Basic user name."""

    def __init__(self, reason: str, user: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.user = reason, user


class Guard:
    """Holds the current credential files and answers `identify(Authorization header)`."""

    def __init__(
        self,
        htpasswd: Path | None,
        tokens: Path | None,
        metrics: Metrics,
        interval: float,
        cache_ttl: float,
        *,
        cache_entries: int = CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval, self._cache_ttl, self._cache_entries, self._clock = (
            interval,
            cache_ttl,
            cache_entries,
            clock,
        )
        self._htpasswd_path, self._tokens_path = htpasswd, tokens
        self._paths = [p for p in (htpasswd, tokens) if p is not None]
        self._metrics = metrics
        self._users = Htpasswd()
        self._tokens: dict[bytes, str] = {}
        # What an unknown user's password is checked against, so an unknown user costs what a known one does.
        self._dummy = b""
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[float, Identity]] = {}
        self._checks: SingleFlight[Identity | None] = SingleFlight()
        self._threads = ThreadPoolExecutor(BCRYPT_THREADS, thread_name_prefix="bcrypt")

    def load(self) -> filewatch.Signature:
        """Read the files now (blocking); raises ConfigError naming a file that cannot be used."""
        since = filewatch.signature(self._paths)
        users, tokens = Htpasswd(), {}
        if self._htpasswd_path is not None:
            users = parse_htpasswd(_read(self._htpasswd_path, "auth_htpasswd"))
        if self._tokens_path is not None:
            try:
                tokens = parse_tokens(_read(self._tokens_path, "auth_tokens"))
            except ValueError as exc:
                raise ConfigError(f"auth_tokens {self._tokens_path}: {exc}") from None
        self._dummy = bcrypt.hashpw(b"-", bcrypt.gensalt(_cost(users)))
        self._users, self._tokens = users, tokens
        self._verified.clear()
        if users.skipped:
            log.warning("auth_htpasswd_entries_ignored", users=list(users.skipped), reason="not bcrypt")
        log.info("auth_files_loaded", users=len(users.users), tokens=len(tokens))
        return since

    async def reload(self) -> None:
        """Re-read the files after they changed; a file that cannot be used keeps the previous content."""
        failure = None
        try:
            await asyncio.to_thread(self.load)
        except ConfigError as exc:
            failure = str(exc)
        self._metrics.auth_reloads.labels("ok" if failure is None else "error").inc()
        if failure is not None:
            log.error("auth_reload_failed", error=failure, kept="the previous users and tokens")

    async def watch(self, since: filewatch.Signature) -> None:
        """Reload whenever the files change; runs until cancelled."""
        await filewatch.watch(self._paths, self.reload, since, self._interval)

    async def identify(self, authorization: str | None) -> Identity:
        """Who sent these credentials; raises Refused."""
        try:
            creds = parse_authorization(authorization)
        except Malformed:
            raise Refused("malformed") from None
        if creds is None:
            raise Refused("missing")
        if isinstance(creds, Bearer):
            name = self._tokens.get(token_digest(creds.token))
            if name is None:
                raise Refused("wrong")
            self._metrics.auth_checks.labels("token").inc()
            return Identity(name, "token")
        return await self._basic(creds)

    async def _basic(self, creds: Basic) -> Identity:
        key = hashlib.blake2b(
            f"{creds.user}\0{creds.password}".encode(), key=self._key, digest_size=32
        ).digest()
        cached = self._verified.get(key)
        if cached is not None and cached[0] > self._clock():
            self._metrics.auth_checks.labels("cached").inc()
            return cached[1]
        users = self._users
        identity, _ = await self._checks.run(key, lambda: self._bcrypt(users, creds))
        if identity is None:
            raise Refused("wrong", creds.user)
        if users is self._users and self._cache_ttl > 0:  # not verified against a file replaced meanwhile
            self._verified.pop(key, None)
            if len(self._verified) >= self._cache_entries:
                del self._verified[next(iter(self._verified))]
            self._verified[key] = (self._clock() + self._cache_ttl, identity)
        return identity

    async def _bcrypt(self, users: Htpasswd, creds: Basic) -> Identity | None:
        self._metrics.auth_checks.labels("verified").inc()
        hashed = users.users.get(creds.user)
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(
            self._threads, _checkpw, bcrypt_password(creds.password), hashed or self._dummy
        )
        return Identity(creds.user, "basic") if ok and hashed is not None else None

    async def close(self) -> None:
        """Drop checks in flight and stop the bcrypt threads."""
        await self._checks.close()
        await asyncio.to_thread(self._threads.shutdown, True, cancel_futures=True)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # a damaged hash in the file: that user cannot log in
        return False


def _cost(users: Htpasswd) -> int:
    """The work factor of the file's first hash (`$2y$05$...` → 5), within 4..14 (costlier dummies would
    stall every reload)."""
    for hashed in users.users.values():
        cost = hashed[4:6]
        if cost.isdigit():
            return min(max(int(cost), 4), 14)
    return 5


def _read(path: Path, key: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {key} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key} {path} is not UTF-8 text") from None
