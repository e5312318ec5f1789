"""Reading a large body off the event loop: blocking reads from its socket in a
worker thread (:class:`Detached`, made by :func:`detach`), hashed and written
there too (:func:`copy_off_loop`), while the loop serves the other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import anyio
import httpx

from mirrorsync.fetch.aiohttp_errors import os_text
from mirrorsync.fetch.answer import Response, Stream

# A body of at least this many bytes (declared, not compressed, plain http) is read
# off the event loop: received, hashed and written by one worker thread with blocking
# reads into a reused buffer (``Body.copy_to``), several at once on all cores. Its
# connection is not kept alive after (the loop's parser never saw the body): the next
# request connects again, one round trip, small beside 8 MiB and more.
OFF_LOOP_MIN = 8 << 20
_RECV = 1 << 20  # bytes received, then hashed and written, at once off the loop
# Off the loop, the disk write of every this many bytes written is started at once:
# the fsync that follows a download then waits for its last few MiB, not all of it
# (8 downloads of 64 MiB ending together: 0.29 s of fsync at the end -> 0.06-0.10 s).
_WRITE_BACK = 8 << 20

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
        self._request = stream.request
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
    answer = stream.answer
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


async def copy_off_loop(
    body: Detached, out: BinaryIO | None, digest: Any, count: Callable[[int], None]
) -> int:
    """``Body.copy_to`` for a body of declared length within the bounds (checked by
    ``Body``; never read past it): one worker thread receives it into a reused
    buffer, hashes and writes it (``recv_into``, hashlib and writes release the
    GIL), so downloads go on side by side on every core while the loop serves the
    rest. Bytes are counted as they arrive (every ``_WRITE_BACK`` bytes); a
    cancelled download (a deadline) stops the thread's read and waits for it
    before going on."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    # "new" until the thread starts ("running"); "given up" once the download is
    # (a cancellation may come while waiting for a thread: then none ever runs).
    state = ["new"]
    lock = threading.Lock()

    def pull() -> int:
        with lock:
            if state[0] == "given up":
                return 0
            state[0] = "running"
        try:
            length = len(body.head)
            if body.head:
                _sink(body.head, digest, out)
            view = memoryview(bytearray(min(_RECV, body.left) or 1))
            flushed = 0  # bytes whose write to disk has been started
            counted = length  # bytes counted (one wake-up of the loop per _WRITE_BACK)
            try:
                while n := body.readinto(view):
                    length += n  # received: counted, whatever happens next
                    _sink(view[:n], digest, out)
                    if length - flushed >= _WRITE_BACK:
                        loop.call_soon_threadsafe(count, length - counted)
                        counted = length
                        if out is not None:
                            _write_back(out, flushed, length - flushed)
                        flushed = length
            finally:
                if length > counted:
                    loop.call_soon_threadsafe(count, length - counted)
            return length
        finally:
            loop.call_soon_threadsafe(_settle, finished)

    if body.head:
        count(len(body.head))
    try:
        return await anyio.to_thread.run_sync(pull, abandon_on_cancel=True)
    except BaseException:
        with lock:
            running, state[0] = state[0] == "running", "given up"
        if running:  # stop its read, and wait: it holds the file and the socket
            body.stop()
            with anyio.CancelScope(shield=True):
                await finished
        raise
    finally:
        body.close()


def _sink(chunk: bytes | memoryview, digest: Any, out: BinaryIO | None) -> None:
    if digest is not None:
        digest.update(chunk)
    if out is not None:
        out.write(chunk)


def _write_back(out: BinaryIO, offset: int, length: int) -> None:
    """Start writing ``out``'s bytes [offset, offset + length) to disk, not waiting
    for it: Linux's POSIX_FADV_DONTNEED starts the write-back of a range's dirty
    pages (and drops only pages already clean, none of these). Durability is still
    the caller's fsync; where the hint is not supported, nothing happens."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        out.flush()
        advise(out.fileno(), offset, length, os.POSIX_FADV_DONTNEED)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
