"""The aiohttp transport: manifests, tokens and tag lists over one `ClientSession` per upstream.

Redirects are not followed here (the client follows them by hand, so `Authorization` never leaves the
upstream's origin), and bodies are never decompressed (manifest bytes are hashed as sent). A forward
proxy is chosen per request by the upstream's `ProxyRules` (aiohttp's own reading of the environment is
off): plain http through it with absolute URIs, https with `CONNECT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from mirror.errors import describe
from mirror.storage.writing import write_all
from mirror.upstream.egress import DIRECT, ProxyRules
from mirror.upstream.transport import BodyBroken, HashUpdate, OnBytes, TransportError

#: Connections per upstream session: manifests and tokens are short requests.
MAX_CONNECTIONS = 256
#: Seconds a resolved address is reused.
DNS_CACHE_SECONDS = 60
#: Bytes of a blob body read before each write (a blob over the session: all transfer threads busy).
PUMP_STEP = 1024 * 1024


class SessionResponse:
    """An aiohttp response seen through the `Response` protocol."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._resp.headers

    @property
    def content_length(self) -> int | None:
        return self._resp.content_length

    async def read(self, limit: int) -> bytes:
        content = self._resp.content
        try:
            body = await content.read(limit)
            while len(body) < limit and not content.at_eof():
                more = await content.read(limit - len(body))
                if not more:
                    break
                body += more
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(describe(exc), timeout=isinstance(exc, TimeoutError)) from None
        return body

    def take_whole(self) -> None:
        """Bodies over the session are always received by `pump_into`."""

    async def pump_into(self, fd: int, hash_update: HashUpdate, on_bytes: OnBytes, skip: int = 0) -> None:
        """Receive the body on the event loop, each piece written and hashed in the default executor
        (no thread is held between pieces): the path of blobs beyond the transfer threads."""
        while True:
            try:
                data = await self._resp.content.read(PUMP_STEP)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BodyBroken(describe(exc)) from None
            if not data:
                return
            if skip:
                dropped = min(skip, len(data))
                data, skip = data[dropped:], skip - dropped
                if not data:
                    continue
            write = asyncio.get_running_loop().run_in_executor(None, _write_and_hash, fd, data, hash_update)
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await write  # the caller closes `fd` after this returns: nothing may write to it then
                on_bytes(len(data))  # written and hashed: counted, so a re-opened body goes on after it
                raise
            on_bytes(len(data))

    def release(self) -> None:
        self._resp.release()


class SessionTransport:
    """Requests over an aiohttp session with the upstream's connect and read timeouts."""

    def __init__(
        self,
        connect_timeout: float | None,
        read_timeout: float | None,
        user_agent: str,
        egress: ProxyRules = DIRECT,
    ) -> None:
        self._egress = egress
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout),
            auto_decompress=False,
            trust_env=False,
            headers={"User-Agent": user_agent},
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ttl_dns_cache=DNS_CACHE_SECONDS),
        )

    async def send(self, method: str, url: URL, headers: Mapping[str, str]) -> SessionResponse:
        proxy = self._egress.proxy_for(url)
        proxy_url = proxy.url if proxy is not None else None
        proxy_headers: dict[str, str] | None = None
        if proxy is not None and proxy.authorization is not None:
            # aiohttp sends proxy_headers only with a CONNECT: plain http carries it in the request.
            if url.scheme == "https":
                proxy_headers = {"Proxy-Authorization": proxy.authorization}
            else:
                headers = {**headers, "Proxy-Authorization": proxy.authorization}
        try:
            resp = await self._session.request(
                method,
                url,
                headers=headers,
                allow_redirects=False,
                proxy=proxy_url,
                proxy_headers=proxy_headers,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(describe(exc), timeout=isinstance(exc, TimeoutError)) from None
        return SessionResponse(resp)

    async def close(self) -> None:
        await self._session.close()


def _write_and_hash(fd: int, data: bytes, hash_update: HashUpdate) -> None:
    write_all(fd, memoryview(data))
    hash_update(memoryview(data))
