"""An httpx transport over aiohttp: httpx's interface, aiohttp's cheaper HTTP/1.1 stack.

httpx stays the client every part of mirrorsync talks to (redirects, URLs,
headers, timeouts, the ``file://`` mount), but
sending a request and reading its answer through httpcore and h11 cost ~0.65
ms of CPU per small request on one core, 74% of a manifest crawl's CPU, while
aiohttp (its parser and connection pool in C) does the same in ~0.1 ms
(README, "Performance"). :class:`AiohttpTransport` hands each request to one
``aiohttp.ClientSession`` and gives its answer back as an ``httpx.Response``
whose body streams from the socket as it arrives; to the client's direct path
(``send_plain``), as an :class:`Answer`, which reads the same status, headers
and body without the cost of building an ``httpx.Response`` (both are a
:class:`Response` to ``fetch/client.py``). A plain GET or HEAD on that
direct path skips the session too (``lean.py``: aiohttp's protocol and parser
on connections kept here), and falls back to it for anything else.

Only aiohttp's transport is used: it never follows redirects (httpx does),
never decompresses (mirrorsync's ``_Body`` does, in bounded steps), keeps no
cookies and reads no proxy settings itself: the proxy for each request is
given by ``mirrorsync/proxies.py`` (``http.proxy``, else the environment). Its exceptions are turned here into httpx's, the ones httpcore
raises for the same failures (refused, reset, dropped, truncated, timed out,
certificate not verified), so the retry policy classifies them and
``fetch/client.py`` words them exactly as before: no aiohttp type or message
leaves this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import httpx
import yarl
from aiohttp.http_exceptions import HttpProcessingError

from mirrorsync.fetch.lean import LeanPool, LeanResponse, plain_target
from mirrorsync.proxies import Proxies

if TYPE_CHECKING:  # aiohttp's type for the headers it parsed
    from multidict import CIMultiDictProxy

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
        self._in_flight = 0
        self._session_busy = 0  # of those, sent through the session
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
    def in_flight(self) -> int:
        """Requests sent whose response has not been closed yet."""
        return self._in_flight

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
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = httpx.create_ssl_context(verify=self._verify)
            tls = self._tls
        head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode("ascii") + block
        self._in_flight += 1
        failure: Exception | None = None
        try:
            answer = await self._lean.request(method, key, head, tls, timeouts)
        except (aiohttp.ClientError, TimeoutError, HttpProcessingError) as exc:
            failure = _translated(exc, None)
        except BaseException:
            self._in_flight -= 1
            raise
        if failure is not None or answer is None:
            self._in_flight -= 1
            if failure is not None:
                raise failure
            return None
        return Answer(answer, _Stream(None, answer, self._released))

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
            if self._tls is None:
                self._tls = httpx.create_ssl_context(verify=self._verify)
            tls: ssl.SSLContext | bool = self._tls
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
        self._in_flight += 1
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
            failure = _translated(exc, request)
        except BaseException:
            self._session_released()
            raise
        if failure is not None:
            self._session_released()
            raise failure
        return Answer(answer, _Stream(request, answer, self._session_released))

    def _released(self) -> None:
        self._in_flight -= 1

    def _session_released(self) -> None:
        self._in_flight -= 1
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


class HeaderLookup(Protocol):
    """Response headers as the client reads them: by name, in any case."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def __getitem__(self, key: str) -> str: ...

    def __contains__(self, key: object) -> bool: ...


class Response(Protocol):
    """What the client reads of an answer: an ``httpx.Response`` (from the
    ``httpx.AsyncClient``: redirects, proxies, ``file://``) or an :class:`Answer`."""

    @property
    def status_code(self) -> int: ...

    @property
    def reason_phrase(self) -> str: ...

    @property
    def headers(self) -> HeaderLookup: ...

    @property
    def stream(self) -> object: ...

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


_REDIRECTS = frozenset({301, 302, 303, 307, 308})  # httpx's has_redirect_location

#: An answer as aiohttp parsed it: through its session, or the lean way (the same parts).
Raw = aiohttp.ClientResponse | LeanResponse


class Answer:
    """An answer as this transport gives it to the client's direct path: the
    status, the headers as aiohttp parsed them (looked up as httpx does: any
    case, repeated headers joined with ", "), the body as it arrives."""

    __slots__ = ("_answer", "headers", "reason_phrase", "status_code", "stream")

    def __init__(self, answer: Raw, stream: _Stream) -> None:
        self._answer = answer
        self.status_code = answer.status
        reason = answer.reason or ""
        # As httpx words it: the status line's bytes, their ASCII kept.
        self.reason_phrase = reason if reason.isascii() else _ascii(reason)
        self.headers = _Headers(answer.headers)
        self.stream = stream

    @property
    def has_redirect_location(self) -> bool:
        return self.status_code in _REDIRECTS and "location" in self.headers

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self.stream.__aiter__()

    async def aclose(self) -> None:
        await self.stream.aclose()

    def as_httpx(self, request: httpx.Request) -> httpx.Response:
        """The same answer as an ``httpx.Response``, for httpx's own client."""
        return httpx.Response(
            self.status_code,
            headers=self._answer.raw_headers,
            stream=self.stream,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (self._answer.reason or "").encode("latin-1", "replace"),
            },
            request=request,
        )


def _ascii(text: str) -> str:
    return text.encode("latin-1", "replace").decode("ascii", "ignore")


class _Headers:
    """aiohttp's parsed headers, read as ``httpx.Headers`` reads: a repeated
    header's values joined with ", " (aiohttp's own ``get`` gives the first)."""

    __slots__ = ("_parsed",)

    def __init__(self, parsed: CIMultiDictProxy[str]) -> None:
        self._parsed = parsed

    def get(self, key: str, default: Any = None) -> Any:
        values = self._parsed.getall(key, None)
        if values is None:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._parsed


class _Stream(httpx.AsyncByteStream):
    """A response body read as it arrives; closing it gives its connection back
    (kept alive when the body was read to its end, closed otherwise), once."""

    def __init__(self, request: httpx.Request | None, answer: Raw, release: Any) -> None:
        self._request = request
        self._answer = answer
        self._release = release
        self.received = 0  # body bytes read, however they were read
        self.detached = False  # the body is read off the loop (``detach``)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # One buffered chunk at a time, as received: ``readany`` would join all
        # that are buffered into a new bytes object, a copy of every byte.
        content = self._answer.content
        while True:
            try:
                chunk, boundary = await content.readchunk()
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = _translated(exc, self._request)
            else:
                if not chunk:
                    # The end of one HTTP chunk (chunked encoding) with more to come:
                    # go on. (A bodiless answer's reader says "end of chunk" forever.)
                    if boundary and not content.at_eof():
                        continue
                    return
                self.received += len(chunk)
                yield chunk
                continue
            raise failure

    async def read_exactly(self, size: int) -> bytes:
        """The body, known to be ``size`` bytes long (its Content-Length), in one read:
        a small document's answer costs one await instead of a chain of iterators.
        A body that breaks off fails as it would when iterated."""
        try:
            whole = await self._answer.content.readexactly(size)
        except asyncio.IncompleteReadError:
            failure: Exception = httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body",
                request=self._request,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = _translated(exc, self._request)
        else:
            self.received += size
            return whole
        raise failure

    async def aclose(self) -> None:
        if self.detached:  # the loop's parser has not seen the body: never reused
            self._answer.close()
        else:
            self._answer.release()  # closes the connection if the body was not read to its end
        release, self._release = self._release, None
        if release is not None:
            release()


_WAITALL = getattr(socket, "MSG_WAITALL", 0)


class Detached:
    """The rest of a body of known length, read from its socket with blocking calls
    in a worker thread (``readinto``), off the event loop: the loop no longer reads
    from the connection, which is closed when the response is.

    ``head`` is what the loop had received already. ``readinto`` never reads past
    the body's end and raises what the loop's reads raise (httpx's errors, as
    httpcore words them); ``stop`` (from the loop) makes a read in progress end
    at once."""

    __slots__ = ("_request", "_sock", "_stream", "head", "left")

    def __init__(self, sock: socket.socket, timeout: float | None, stream: _Stream) -> None:
        # Blocking reads that wait for a whole buffer (MSG_WAITALL: one call and one
        # wake-up per MiB, not a poll() and a recv() per few dozen KiB: ~5% less CPU
        # for the same bytes in a bare benchmark), each failing once ``timeout`` passes with nothing received
        # (SO_RCVTIMEO; a call that got some bytes returns them then). The loop no
        # longer uses the descriptor, only closes it.
        sock.settimeout(None)
        if timeout is not None:
            seconds = int(timeout)
            micro = max(int((timeout - seconds) * 1_000_000), 0 if seconds else 1)  # 0: never
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micro)
            )
        self._sock = sock
        self._stream = stream
        self._request = stream._request
        self.head = b""
        self.left = 0  # bytes of the body still on the wire

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` (or the part of it the body still has); 0 once all is read."""
        want = min(len(view), self.left)
        filled = 0
        try:
            while filled < want:
                n = self._sock.recv_into(view[filled:want], want - filled, _WAITALL)
                if n == 0:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body",
                        request=self._request,
                    )
                filled += n
        except (TimeoutError, BlockingIOError):  # SO_RCVTIMEO passed: EAGAIN
            raise httpx.ReadTimeout("timed out reading", request=self._request) from None
        except OSError as exc:
            raise httpx.ReadError(_os_text(exc), request=self._request) from None
        finally:
            self.left -= filled
            self._stream.received += filled
        return filled

    def stop(self) -> None:
        """End a blocked ``readinto`` now (it raises): the request is given up."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


def detach(response: Response, size: int, timeout: float | None) -> Detached | None:
    """The body of a response from this transport, ``size`` bytes long (its
    Content-Length), none of it read yet, to be read off the event loop; None
    when it cannot be (TLS: the loop's SSL object holds the stream; an error
    already; all of it received), to be read as a stream."""
    stream = response.stream
    if not isinstance(stream, _Stream) or stream.received:
        return None
    answer = stream._answer
    connection = answer.connection
    content = answer.content
    if connection is None or content.exception() is not None or content.is_eof():
        return None
    if "transfer-encoding" in answer.headers:  # framed by the parser, whatever it declares
        return None
    transport, protocol = connection.transport, connection.protocol
    if transport is None or protocol is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    raw = transport.get_extra_info("socket")
    if raw is None or raw.type != socket.SOCK_STREAM:
        return None
    if content.total_bytes > size:  # the parser never passes more than Content-Length
        return None
    try:  # the thread's own descriptor of the connection (closing either leaves the other)
        sock = socket.socket(raw.family, raw.type, raw.proto, os.dup(raw.fileno()))
    except OSError:  # out of descriptors: read on the loop, as ever
        return None
    try:
        body = Detached(sock, timeout, stream)
    except OSError:
        sock.close()
        return None
    # What arrived is taken first (taking it may ask the transport to read again),
    # then the loop stops reading: every later byte is the thread's.
    body.head = content.read_nowait(-1)
    body.left = size - len(body.head)
    protocol.pause_reading()  # and its sock_read timer: the thread times its own reads
    stream.detached = True
    stream.received += len(body.head)
    return body


async def read_declared(response: Response, size: int) -> bytes | None:
    """The whole body of a response from this transport whose Content-Length is
    ``size`` (and within the caller's bounds), in one read; None for any other
    response, to be read as a stream."""
    stream = response.stream
    if isinstance(stream, _Stream):
        return await stream.read_exactly(size)
    return None


def bytes_received(response: Response) -> int:
    """The body bytes read so far (as received: compressed or not)."""
    stream = response.stream
    if isinstance(stream, _Stream):
        return stream.received
    return response.num_bytes_downloaded if isinstance(response, httpx.Response) else 0


def as_sent(headers: httpx.Headers) -> list[tuple[str, str]]:
    """Header names and values as httpx would put them on the wire (names not lowercased)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]


def _translated(
    exc: aiohttp.ClientError | TimeoutError | HttpProcessingError,
    request: httpx.Request | None,
) -> Exception:
    """aiohttp's exception as the httpx one httpcore raises for the same failure.

    Raised by the caller outside its ``except`` block, so that aiohttp's
    exception is not chained to it (a certificate failure keeps the ssl error
    as its cause, for the retry policy to find)."""
    error: httpx.TransportError
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = httpx.ConnectError(str(exc.certificate_error), request=request)
        error.__cause__ = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = httpx.ConnectError(_os_text(exc.os_error), request=request)
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        error = httpx.ConnectTimeout("timed out connecting", request=request)
    elif isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        error = httpx.ReadTimeout("timed out reading", request=request)
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        error = httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )
    elif isinstance(exc, aiohttp.ClientPayloadError):
        error = httpx.RemoteProtocolError(_payload_text(exc), request=request)
    elif isinstance(exc, aiohttp.ClientOSError):
        error = httpx.ReadError(_os_text(exc), request=request)
    elif isinstance(
        exc, aiohttp.ClientResponseError | HttpProcessingError
    ):  # a status line or header that does not parse (the lean path: the parser's own error)
        error = httpx.RemoteProtocolError(
            f"malformed response: {exc.message}"[:200], request=request
        )
    else:
        error = httpx.TransportError(type(exc).__name__, request=request)
    error.__suppress_context__ = True
    return error


def _os_text(exc: OSError) -> str:
    """``[Errno 111] Connection refused``: the system's words, as httpcore gives them."""
    if exc.errno is not None and exc.errno > 0:
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    if exc.errno is not None and exc.strerror:  # getaddrinfo: negative codes
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc) or errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _payload_text(exc: aiohttp.ClientPayloadError) -> str:
    """A body that broke off: the words h11 uses for it."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.errno:
        return _os_text(cause)
    return "peer closed connection without sending complete message body"
