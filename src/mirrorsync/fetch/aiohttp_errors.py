"""aiohttp's exceptions as httpx's: the one place an aiohttp failure is worded.

The transport (``fetch/transport.py``), the answer's body (``fetch/answer.py``)
and the off-loop reader (``fetch/offloop.py``) raise the httpx exception httpcore
raises for the same failure (refused, reset, dropped, truncated, timed out,
certificate not verified), worded as httpcore words it, so the retry policy
classifies them and ``fetch/client.py`` words them exactly as before: no aiohttp
type or message leaves the fetch package's edge.
"""

from __future__ import annotations

import errno
import os

import aiohttp
import httpx
from aiohttp.http_exceptions import HttpProcessingError


def translated(
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
        error = httpx.ConnectError(os_text(exc.os_error), request=request)
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
        error = httpx.ReadError(os_text(exc), request=request)
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


def os_text(exc: OSError) -> str:
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
        return os_text(cause)
    return "peer closed connection without sending complete message body"
