"""An httpx transport over aiohttp: httpx's interface, aiohttp's cheaper HTTP/1.1 stack.

httpx stays the client every part of mirrorsync talks to (redirects, URLs,
headers, timeouts, the ``file://`` mount), but
sending a request and reading its answer through httpcore and h11 cost ~0.65
ms of CPU per small request on one core, 74% of a manifest crawl's CPU, while
aiohttp (its parser and connection pool in C) does the same in ~0.1 ms
(README, "Performance"). :class:`AiohttpTransport` hands each request to one
``aiohttp.ClientSession`` and gives its answer back as an ``httpx.Response``
whose body streams from the socket as it arrives; to the client's direct path
(``send_plain``), as an :class:`~mirrorsync.fetch.answer.Answer`, which reads
the same status, headers and body without the cost of building an
``httpx.Response`` (both are a ``Response`` to ``fetch/client.py``; see
``fetch/answer.py``). A plain GET or HEAD on that
direct path skips the session too (``lean.py``: aiohttp's protocol and parser
on connections kept here), and falls back to it for anything else.

Only aiohttp's transport is used: it never follows redirects (httpx does),
never decompresses (mirrorsync's ``Body`` does, in bounded steps: ``fetch/body.py``),
keeps no cookies and reads no proxy settings itself: the proxy for each request is
given by ``mirrorsync/proxies.py`` (``http.proxy``, else the environment). Its
exceptions are turned into httpx's (``fetch/aiohttp_errors.py``), the ones httpcore
raises for the same failures, so the retry policy classifies them and
``fetch/client.py`` words them exactly as before: no aiohttp type or message
leaves the fetch package's edge. A large body is read off the event loop by
``fetch/offloop.py``.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import httpx
import yarl
from aiohttp.http_exceptions import HttpProcessingError

from mirrorsync.fetch.aiohttp_errors import translated
from mirrorsync.fetch.answer import Answer, Stream
from mirrorsync.fetch.lean import LeanPool, plain_target
from mirrorsync.proxies import Proxies

#: Idle connections are closed after this long (httpx's default keep-alive expiry).
KEEPALIVE_SECONDS = 5.0
#: A response's bytes buffered before reading from its socket pauses (aiohttp's
#: default is 64 KiB): a large download goes on arriving while the last batch is
#: hashed and written in a worker thread. 700 MiB: 2.2 -> 1.5 ns of CPU a byte.
READ_BUFFER = 1 << 20


#: Headers aiohttp would add to a request without them (httpx sets its own).
_AUTO_SKIP = ("User-Agent", "Accept", "Accept-Encoding")
_AUTO_HEADERS = frozenset(name.lower() for name in _AUTO_SKIP)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """At most ``connections`` connections, kept alive between requests; http and https.

    https certificates are verified as httpx does (its CA bundle, SSL_CERT_FILE
    and SSL_CERT_DIR) unless ``verify`` is False; the TLS context is made on the
    first https request, so a run that only speaks plain http never reads the
    CA bundle (50 ms at every start). The session is made on the first request,
    inside the event loop that uses it.
    """

    def __init__(
        self, *, connections: int, verify: bool = True, proxies: Proxies | None = None
    ) -> None:
        self._connections = max(1, connections)
        self._proxies = proxies if proxies is not None and proxies.any else None
        self._verify = verify
        self._tls: ssl.SSLContext | None = None
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._session_busy = 0  # requests sent through the session, not closed yet
        # Plain GETs and HEADs (``send_plain``): the lean path, with room for the
        # connections the session has busy (the two never hold more than
        # ``connections`` busy between them; see ``lean.py``).
        self._lean = LeanPool(
            limit=self._connections,
            keepalive=KEEPALIVE_SECONDS,
            read_bufsize=READ_BUFFER,
            outside=self._session_in_use,
        )

    @property
    def session_opened(self) -> bool:
        """Whether any request went through aiohttp's session (not the lean way)."""
        return self._session is not None

    @property
    def lean_connections(self) -> int:
        """Connections the lean path holds open now, idle or busy."""
        return self._lean.open

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # A request httpx made to follow a redirect carries its body as a stream
        # (empty: mirrorsync sends only GET and HEAD); read it, never refuse it.
        body = await request.aread() or None
        given = request.extensions.get("timeout", {})
        timeouts = (given.get("connect"), given.get("read"), given.get("pool"))
        url = yarl.URL(str(request.url), encoded=True)  # httpx has quoted it
        if url.user is not None:  # httpx has turned it into an Authorization header
            url = url.with_user(None)
        answer = await self._send(
            request.method,
            url,
            as_sent(request.headers),
            body,
            timeouts,
            request,
        )
        return answer.as_httpx(request)

    async def send_plain(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        timeouts: tuple[float | None, float | None, float | None],
        body: Any = None,
    ) -> Answer:
        """A request to an absolute http(s) URL without credentials, as
        ``handle_async_request`` sends it but without building an ``httpx.Request``
        first (parsing its URL is a fifth of a small request's CPU), answered
        with an :class:`Answer` rather than an ``httpx.Response`` (making one and
        looking its headers up cost as much again): ``headers`` must hold every
        header to send but Host; ``timeouts`` is (connect, read, pool); ``body``
        (uploads: bytes or an open binary file) is sent as aiohttp sends it.
        Errors are httpx's, as ever.

        A GET or HEAD without a body or proxy, to a URL and with headers sent
        as they are written (``lean.plain_target``, ``LeanPool.header_block``),
        goes the lean way (``lean.py``: aiohttp's parser on connections kept
        here, not its session); so does its answer, read as any. Any other, or
        one whose connection cannot be made, goes through the session."""
        if body is None and (method == "GET" or method == "HEAD"):
            plain = plain_target(url)
            block = None if plain is None else self._lean.header_block(headers)
            if plain is not None and block is not None:
                answer = await self._send_lean(method, *plain, block, timeouts)
                if answer is not None:
                    return answer
        try:
            target = yarl.URL(url)
        except ValueError as exc:
            raise httpx.InvalidURL(f"invalid URL: {exc}") from None
        if not target.host:
            raise httpx.InvalidURL("no host in the URL")
        return await self._send(method, target, headers, body, timeouts, None)

    async def _send_lean(
        self,
        method: str,
        key: tuple[str, str, int],
        host: str,
        target: str,
        block: bytes,
        timeouts: tuple[float | None, float | None, float | None],
    ) -> Answer | None:
        """``send_plain``'s lean way; None: to be sent through the session (a
        proxy applies, or no connection could be made)."""
        scheme = key[0]
        if self._proxies is not None and self._proxies.for_url(scheme, f"{key[1]}:{key[2]}"):
            return None
        tls = self._tls_context() if scheme == "https" else None
        head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode("ascii") + block
        failure: Exception | None = None
        try:
            answer = await self._lean.request(method, key, head, tls, timeouts)
        except (aiohttp.ClientError, TimeoutError, HttpProcessingError) as exc:
            failure = translated(exc, None)  # raised out here: its own cause, if any, kept
        if failure is not None:
            raise failure
        if answer is None:
            return None
        return Answer(answer, Stream(None, answer, None))

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS context of every https request (made at the first), lean or not."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context(verify=self._verify)
        return self._tls

    def _session_in_use(self) -> int:
        return self._session_busy

    async def _send(
        self,
        method: str,
        url: yarl.URL,
        headers: list[tuple[str, str]],
        body: Any,
        timeouts: tuple[float | None, float | None, float | None],
        request: httpx.Request | None,
    ) -> Answer:
        scheme = url.scheme
        if scheme == "https":
            tls: ssl.SSLContext | bool = self._tls_context()
        elif scheme == "http":
            tls = True  # unused: no TLS on plain http
        else:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        session = self._session
        if session is None or session.closed:
            session = self._session = self._open()
        proxy = None
        if self._proxies is not None:
            proxy = self._proxies.for_url(scheme, f"{url.raw_host}:{url.port}")
        # aiohttp adds Accept, Accept-Encoding and User-Agent to a request without
        # them unless told to skip them; httpx's requests carry all three, and
        # skipping costs a sorted copy of the headers per request (3% of a crawl's
        # CPU), so aiohttp is told only when one is missing.
        skip = None if _AUTO_HEADERS.issubset([k.lower() for k, _ in headers]) else _AUTO_SKIP
        self._session_busy += 1
        failure: Exception | None = None
        try:
            answer = await session.request(
                method,
                url,
                headers=headers,
                skip_auto_headers=skip,
                data=body,
                allow_redirects=False,
                ssl=tls,
                timeout=self._timeout(timeouts),
                proxy=proxy,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = translated(exc, request)
        except BaseException:
            self._session_released()
            raise
        if failure is not None:
            self._session_released()
            raise failure
        return Answer(answer, Stream(request, answer, self._session_released))

    def _session_released(self) -> None:
        self._session_busy -= 1
        self._lean.outside_freed()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._connections,
            limit_per_host=0,  # the throttle caps requests per host
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            read_bufsize=READ_BUFFER,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        # aiohttp silently sends a GET again when a kept-alive connection fails;
        # every attempt is mirrorsync's retry policy's to count, wait for and log
        # (as aiohttp's own test client does, with this same attribute).
        session._retry_connection = False
        return session

    def _timeout(
        self, key: tuple[float | None, float | None, float | None]
    ) -> aiohttp.ClientTimeout:
        """httpx's timeouts (connect, read, pool) as aiohttp's: a connect (waiting
        for a pooled connection, then connecting) and a read (between two arrivals)."""
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None,
                connect=None if connect is None or pool is None else connect + pool,
                sock_connect=connect,
                sock_read=read,
            )
        return timeout

    async def aclose(self) -> None:
        self._lean.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


def as_sent(headers: httpx.Headers) -> list[tuple[str, str]]:
    """Header names and values as httpx would put them on the wire (names not lowercased)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]
