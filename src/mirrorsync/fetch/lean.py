"""A lean request path for plain GET and HEAD requests: aiohttp's parser, not its session.

A manifest crawl sends thousands of small bodiless GETs to one host. Through
``aiohttp.ClientSession`` each pays for the session's machinery (a
``ClientRequest`` and ``ClientResponse``, the connector's bookkeeping, timers,
traces, middlewares, cookie and redirect handling mirrorsync never uses) more
than for the HTTP it speaks. :class:`LeanPool` keeps what does the work:
aiohttp's own protocol (``client_proto.ResponseHandler``) and its HTTP parser
(in C), over connections it keeps alive itself, and writes the request head in
one call. What comes back is a :class:`LeanResponse`: the same status, reason,
headers (aiohttp's parsed ``CIMultiDictProxy``) and body (aiohttp's
``StreamReader``) as a ``ClientResponse`` carries, read the same way
(``fetch/answer.py``); ``fetch/transport.py`` alone decides what is sent here
(:func:`plain_target`, :meth:`LeanPool.header_block`) and turns every error
into httpx's, as for the session's.

The pool never holds more than ``limit`` connections, idle or busy, less those
``outside`` reports busy elsewhere (the session's): a new connection first
closes an idle one to another host if it must, or waits for one to come back.
Nothing is retried here: a request sent on a kept-alive connection the server
had closed fails as it does through the session (every attempt is the retry
policy's), and a connection that cannot be made is reported as ``None`` to the
caller, who sends the request through the session instead.

Needs aiohttp 3.10 or later (``ResponseHandler.set_response_params`` with
``timeout_ceil_threshold``, ``start_timeout``; the parser's ``HttpProcessingError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import ConnectionTimeoutError
from aiohttp.client_proto import ResponseHandler

if TYPE_CHECKING:
    from aiohttp.streams import StreamReader
    from multidict import CIMultiDictProxy

#: (scheme, host, port): connections are only reused for the same one.
Key = tuple[str, str, int]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# An absolute http(s) URL that yarl (the session's URL parser) leaves as it is,
# so sending it as written is sending what the session would: a lowercase host
# name or IPv4 address, an optional port without leading zeros, a path and query
# of characters yarl never quotes or decodes (no "%", no fragment).
_PLAIN = re.compile(
    r"(https?)://([a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)"
    r"(?::([1-9][0-9]{0,4}))?"
    r"((?:/[A-Za-z0-9!$&'()*+,\-./:;=@_~]*)?(?:\?[A-Za-z0-9!$&'()*+,\-./:;=?@_~]*)?)"
)
# A dot segment ("/./", "/../", a path ending "/." or "/.."): yarl removes it.
_DOT_SEGMENT = re.compile(r"/\.\.?(?:[/?]|$)")
# Header names that are tokens (RFC 9110 5.6.2) and values of visible ASCII,
# spaces and tabs: written as they are, as aiohttp would write them.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
# Headers that change how the message is framed or where it goes: the session's.
_FRAMING = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade"}
)


def plain_target(url: str) -> tuple[Key, str, str] | None:
    """(key, Host header, request target) of an absolute http(s) URL the lean
    path sends exactly as the session would; None for any other (an upper-case
    or international host, IPv6, percent-escapes, dot segments, an empty query,
    a fragment, credentials, an explicit default port: yarl would rewrite them)."""
    match = _PLAIN.fullmatch(url)
    if match is None:
        return None
    scheme, host, port_text, target = match.groups()
    path, mark, query = target.partition("?")
    if _DOT_SEGMENT.search(path) or (mark and not query):  # yarl drops an empty query
        return None
    default = _DEFAULT_PORTS[scheme]
    if port_text is None:
        port, host_header = default, host
    else:
        port = int(port_text)
        if port > 65535 or port == default:
            return None
        host_header = f"{host}:{port}"
    if not target or target[0] == "?":
        target = "/" + target
    return (scheme, host, port), host_header, target


def plain_headers(headers: list[tuple[str, str]]) -> bool:
    """Whether the lean path may write these headers as they are: token names,
    visible ASCII values, none that frames the message or the connection (but
    ``Connection: keep-alive``): the session's to write or refuse."""
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
            return False
        lowered = name.lower()
        if lowered in _FRAMING and not (lowered == "connection" and value.lower() == "keep-alive"):
            return False  # (keep-alive, as httpx's defaults say, is HTTP/1.1's own default)
    return True


#: Header blocks remembered (a crawl sends the same headers again and again; a
#: revalidation's differ by their ETag: forgotten all at once past this many).
_BLOCKS_KEPT = 256


class LeanConnection:
    """One kept-alive connection: its transport and aiohttp's protocol on it."""

    __slots__ = ("key", "protocol", "transport", "used")

    def __init__(self, key: Key, transport: asyncio.Transport, protocol: ResponseHandler) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = transport
        self.protocol: ResponseHandler | None = protocol
        self.used = time.monotonic()  # when it was last given back

    def usable(self) -> bool:
        protocol = self.protocol
        return protocol is not None and protocol.is_connected() and not protocol.should_close

    def close(self) -> None:
        protocol, self.protocol, self.transport = self.protocol, None, None
        if protocol is not None:
            protocol.close()


class LeanResponse:
    """What ``fetch/answer.py`` reads of an answer, as a ``ClientResponse``
    gives it: status, reason, headers, raw headers, the body's ``StreamReader``
    (``content``), the connection (for a body read off the loop); ``release``
    gives the connection back (kept alive only if the body was read to its end
    and the server did not ask to close), ``close`` closes it."""

    __slots__ = ("_pool", "connection", "content", "headers", "raw_headers", "reason", "status")

    def __init__(
        self,
        pool: LeanPool,
        connection: LeanConnection,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        raw_headers: tuple[tuple[bytes, bytes], ...],
        content: StreamReader,
    ) -> None:
        self._pool: LeanPool | None = pool
        self.connection: LeanConnection | None = connection
        self.status = status
        self.reason: str | None = reason
        self.headers = headers
        self.raw_headers = raw_headers
        self.content = content

    def release(self) -> None:
        pool, connection = self._pool, self.connection
        self._pool = self.connection = None
        if pool is not None and connection is not None:
            pool.give_back(connection)

    def close(self) -> None:
        pool, connection = self._pool, self.connection
        self._pool = self.connection = None
        if pool is not None and connection is not None:
            pool.discard(connection)


class LeanPool:
    """Kept-alive connections for the lean path, at most ``limit`` open at once
    (less ``outside()``, the connections busy elsewhere), each closed after
    ``keepalive`` seconds idle."""

    def __init__(
        self,
        *,
        limit: int,
        keepalive: float,
        read_bufsize: int,
        outside: Callable[[], int] = lambda: 0,
    ) -> None:
        self._limit = max(1, limit)
        self._keepalive = keepalive
        self._read_bufsize = read_bufsize
        self._outside = outside
        self._idle: dict[Key, list[LeanConnection]] = {}
        self._idle_count = 0
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._blocks: dict[tuple[tuple[str, str], ...], bytes | None] = {}

    def header_block(self, headers: list[tuple[str, str]]) -> bytes | None:
        """The request's header lines as written (after the request line and
        Host), ending with the blank line; None when they are not
        :func:`plain_headers`. Remembered: checking and encoding them was 4%
        of a crawl's CPU."""
        key = tuple(headers)
        block = self._blocks.get(key, b"")
        if block == b"":
            if len(self._blocks) >= _BLOCKS_KEPT:
                self._blocks.clear()
            block = None
            if plain_headers(headers):
                lines = "".join([f"{name}: {value}\r\n" for name, value in headers])
                block = (lines + "\r\n").encode("ascii")
            self._blocks[key] = block
        return block

    @property
    def open(self) -> int:
        """Connections open now, idle or busy."""
        return self._open

    async def request(
        self,
        method: str,
        key: Key,
        head: bytes,
        tls: ssl.SSLContext | None,
        timeouts: tuple[float | None, float | None, float | None],
    ) -> LeanResponse | None:
        """Send ``head`` (a whole bodiless request) and read the answer's status
        line and headers; None when no connection could be made (refused, name
        not resolved, TLS not verified: the caller sends it the session's way,
        which words that failure). aiohttp's errors otherwise, as its session
        raises them (``ConnectionTimeoutError`` for a connection not made in
        time; the parser's ``HttpProcessingError`` for an answer that does not parse)."""
        connect, read, pool_wait = timeouts
        connection = self._take_idle(key)
        if connection is None:
            # As the session times them: waiting for room and connecting within
            # connect + pool, connecting alone within connect.
            loop = asyncio.get_running_loop()
            ends = (
                None if connect is None or pool_wait is None else loop.time() + connect + pool_wait
            )
            try:
                async with asyncio.timeout_at(ends):
                    await self._room()
            except TimeoutError:
                raise ConnectionTimeoutError(f"Connection timeout to host {key[1]}") from None
            try:
                if connect is not None:
                    left = connect if ends is None else min(connect, ends - loop.time())
                    ends = loop.time() + left
                async with asyncio.timeout_at(ends):
                    connection = await self._connect(key, tls)
            except TimeoutError:
                self._closed_one()
                raise ConnectionTimeoutError(f"Connection timeout to host {key[1]}") from None
            except BaseException:
                self._closed_one()
                raise
            if connection is None:
                self._closed_one()
                return None
        protocol, transport = connection.protocol, connection.transport
        assert protocol is not None and transport is not None
        try:
            protocol.set_response_params(
                skip_payload=method == "HEAD",
                read_until_eof=True,  # as the session: no length, no chunks: to the close
                auto_decompress=False,
                read_timeout=read,
                read_bufsize=self._read_bufsize,
                timeout_ceil_threshold=5,
            )
            transport.write(head)
            protocol.start_timeout()
            while True:
                message, payload = await protocol.read()
                code = message.code
                if code < 100 or code > 199 or code == 101:
                    break
        except BaseException:
            self.discard(connection)
            raise
        return LeanResponse(
            self,
            connection,
            code,
            message.reason,
            message.headers,
            message.raw_headers,
            payload,
        )

    def _take_idle(self, key: Key) -> LeanConnection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.usable() and now - connection.used < self._keepalive:
                return connection
            self.discard(connection)
        return None

    async def _room(self) -> None:
        """Count one more connection, once there is room for it: closing an
        idle one if that is what it takes, else waiting for one to be closed."""
        while self._open + self._outside() >= self._limit:
            if self._idle_count:
                self._close_oldest_idle()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then given up: the room goes to the next one
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        self._open += 1

    async def _connect(self, key: Key, tls: ssl.SSLContext | None) -> LeanConnection | None:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_connection(
                lambda: ResponseHandler(loop),
                host,
                port,
                ssl=tls if scheme == "https" else None,
                server_hostname=host if scheme == "https" else None,
            )
        except OSError:  # refused, unreachable, not resolved, certificate: the session's
            return None
        return LeanConnection(key, transport, protocol)

    def give_back(self, connection: LeanConnection) -> None:
        """A connection whose answer is done: kept alive if it can be, else closed."""
        if self._closed or not connection.usable():
            self.discard(connection)
            return
        connection.used = time.monotonic()
        self._idle.setdefault(connection.key, []).append(connection)
        self._idle_count += 1
        if self._waiters:  # room for one that waits: this one, to close or to reuse
            self._wake()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive, self._sweep)

    def discard(self, connection: LeanConnection) -> None:
        """Close a connection (idle or busy) and count it out."""
        if connection.protocol is None:
            return
        connection.close()
        self._closed_one()

    def outside_freed(self) -> None:
        """One of the connections busy elsewhere (``outside``) is free: room for a waiter."""
        self._wake()

    def _closed_one(self) -> None:
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_oldest_idle(self) -> None:
        oldest = min((idle for idle in self._idle.values() if idle), key=lambda idle: idle[0].used)
        connection = oldest.pop(0)
        self._idle_count -= 1
        self.discard(connection)

    def _sweep(self) -> None:
        """Close connections idle for longer than ``keepalive``; again later while any is idle."""
        self._sweeper = None
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            keep = []
            for connection in idle:
                if now - connection.used < self._keepalive and connection.usable():
                    keep.append(connection)
                else:
                    self._idle_count -= 1
                    self.discard(connection)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle_count and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive, self._sweep)

    def close(self) -> None:
        """Close every idle connection; a busy one is closed when given back."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                self.discard(connection)
        self._idle.clear()
        self._idle_count = 0
