"""Connection pools sized for many small requests, over httpcore.

:class:`~mirrorsync.fetch.client.HttpClient` no longer sends through these: its
transport is aiohttp's (``fetch/transport.py``), whose pool does not cost more
per request the more connections it holds. :class:`PoolShards` stays an httpx
transport over httpcore that keeps its promises (tests/test_pools.py).

httpcore's connection pool re-examines every one of its connections whenever a
request starts or finishes (an expiry check with a ``poll()`` per connection,
then an idle scan per queued request), so its CPU cost per request grows with
the pool. On loopback, fetching 10,000 spec manifests at concurrency 16 costs
2.7 ms of CPU per request through one pool of 16 connections and 1.3 ms through
eight pools of two (README, "Performance").

:class:`PoolShards` keeps the configured number of connections but spreads them
over small pools, and sends each request to the pool with the most free
connections, so the total in flight never exceeds the limit and connections
are reused as long as they stay warm.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable

import httpx

#: Connections per pool: two cost no more per request than one (measured).
CONNECTIONS_PER_POOL = 2


class PoolShards(httpx.AsyncBaseTransport):
    """``connections`` keep-alive connections per URL scheme, in pools of two.

    The pools for a scheme are made on its first request, so a run that only
    speaks plain http never reads the CA bundle (50 ms at every start). https
    pools verify certificates as httpx does unless ``verify`` is False; http
    pools are given a context that trusts nothing, never used.
    """

    def __init__(self, *, connections: int, verify: bool = True) -> None:
        full, rest = divmod(max(1, connections), CONNECTIONS_PER_POOL)
        self._sizes = [CONNECTIONS_PER_POOL] * full + ([rest] if rest else [])
        self._verify = verify
        self._schemes: dict[str, _Shards] = {}

    @property
    def in_flight(self) -> int:
        """Requests sent whose response has not been closed yet."""
        return sum(sum(shards.in_flight) for shards in self._schemes.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        shards = self._schemes.get(scheme)
        if shards is None:
            if scheme == "https":
                context = httpx.create_ssl_context(verify=self._verify)
            elif scheme == "http":
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA: would verify nothing
            else:
                raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
            shards = self._schemes[scheme] = _Shards(self._sizes, context)
        return await shards.send(request)

    async def aclose(self) -> None:
        for shards in self._schemes.values():
            for pool in shards.pools:
                await pool.aclose()


class _Shards:
    def __init__(self, sizes: list[int], context: ssl.SSLContext) -> None:
        self.sizes = sizes
        self.pools = [
            httpx.AsyncHTTPTransport(
                verify=context,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            for size in sizes
        ]
        self.in_flight = [0] * len(sizes)

    async def send(self, request: httpx.Request) -> httpx.Response:
        # The pool with the most free connections; ties go to the first, so a
        # light load keeps using the same few connections.
        i = max(range(len(self.pools)), key=lambda k: self.sizes[k] - self.in_flight[k])
        self.in_flight[i] += 1
        try:
            response = await self.pools[i].handle_async_request(request)
        except BaseException:
            self.in_flight[i] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Released(response.stream, lambda: self._release(i))
        return response

    def _release(self, i: int) -> None:
        self.in_flight[i] -= 1


class _Released(httpx.AsyncByteStream):
    """A response body that gives its connection's slot back when closed (once)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
