"""An answer as the client reads it: the :class:`Response` protocol, and aiohttp's
answer adapted to it.

:class:`Answer` is what ``AiohttpTransport.send_plain`` gives the client's
direct path: the status, headers and body aiohttp parsed, without the cost of
building an ``httpx.Response`` (``as_httpx`` builds one for httpx's own client).
Its body, a :class:`Stream`, is read as it arrives; ``read_declared`` reads one
of known length in one go, ``bytes_received`` tells how much has arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import httpx

from mirrorsync.fetch.aiohttp_errors import translated
from mirrorsync.fetch.lean import LeanResponse

if TYPE_CHECKING:  # aiohttp's type for the headers it parsed
    from multidict import CIMultiDictProxy


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
    """An answer as ``AiohttpTransport`` gives it to the client's direct path: the
    status, the headers as aiohttp parsed them (looked up as httpx does: any
    case, repeated headers joined with ", "), the body as it arrives."""

    __slots__ = ("_answer", "headers", "reason_phrase", "status_code", "stream")

    def __init__(self, answer: Raw, stream: Stream) -> None:
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


class Stream(httpx.AsyncByteStream):
    """A response body read as it arrives; closing it gives its connection back
    (kept alive when the body was read to its end, closed otherwise), once."""

    def __init__(self, request: httpx.Request | None, answer: Raw, release: Any) -> None:
        self.request = request
        self.answer = answer
        self._release = release
        self.received = 0  # body bytes read, however they were read
        self.detached = False  # the body is read off the loop (``detach``)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # One buffered chunk at a time, as received: ``readany`` would join all
        # that are buffered into a new bytes object, a copy of every byte.
        content = self.answer.content
        while True:
            try:
                chunk, boundary = await content.readchunk()
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = translated(exc, self.request)
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
            whole = await self.answer.content.readexactly(size)
        except asyncio.IncompleteReadError:
            failure: Exception = httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body",
                request=self.request,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = translated(exc, self.request)
        else:
            self.received += size
            return whole
        raise failure

    async def aclose(self) -> None:
        if self.detached:  # the loop's parser has not seen the body: never reused
            self.answer.close()
        else:
            self.answer.release()  # closes the connection if the body was not read to its end
        release, self._release = self._release, None
        if release is not None:
            release()


async def read_declared(response: Response, size: int) -> bytes | None:
    """The whole body of a response from ``AiohttpTransport`` whose Content-Length is
    ``size`` (and within the caller's bounds), in one read; None for any other
    response, to be read as a stream."""
    stream = response.stream
    if isinstance(stream, Stream):
        return await stream.read_exactly(size)
    return None


def bytes_received(response: Response) -> int:
    """The body bytes read so far (as received: compressed or not)."""
    stream = response.stream
    if isinstance(stream, Stream):
        return stream.received
    return response.num_bytes_downloaded if isinstance(response, httpx.Response) else 0
