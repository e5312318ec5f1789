"""Reading a large body off the event loop: blocking reads from its socket in a
worker thread (:class:`Detached`, made by :func:`detach`), while the loop serves
the other requests.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

import httpx

from mirrorsync.fetch.aiohttp_errors import os_text
from mirrorsync.fetch.answer import Response, Stream

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

    def __init__(self, sock: socket.socket, timeout: float | None, stream: Stream) -> None:
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
            raise httpx.ReadError(os_text(exc), request=self._request) from None
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
    """The body of a response from ``AiohttpTransport``, ``size`` bytes long (its
    Content-Length), none of it read yet, to be read off the event loop; None
    when it cannot be (TLS: the loop's SSL object holds the stream; an error
    already; all of it received), to be read as a stream."""
    stream = response.stream
    if not isinstance(stream, Stream) or stream.received:
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
