"""A response body read in bounded steps: the one length, limit and digest check
of every download (:class:`Body`), and the small bodies nobody needs, read to
keep their connection (:func:`drain`).

A body is never read, or decompressed (gzip, deflate: a bounded step at a
time, so a decompression bomb stops at the limit), past its promised length
(+1 byte, to see that it is too long) or its size limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, BinaryIO

import anyio
import httpx

from mirrorsync.errors import FetchError, IntegrityError
from mirrorsync.fetch.answer import Response, read_declared
from mirrorsync.fetch.offloop import OFF_LOOP_MIN, copy_off_loop, detach
from mirrorsync.redact import Url
from mirrorsync.units import header_count

_STEP = 1 << 20  # most bytes decompressed at once
# Bytes hashed and written at once, in a worker thread. Each hand-over costs: with
# 1 MiB batches a 700 MiB download took 2.1 ns of CPU a byte, with 4 MiB 1.5, as
# much as hashing and writing on the event loop (1.4; README, "Performance").
BATCH = 4 << 20
_DRAIN_MAX = 64 * 1024  # error bodies up to this size are read, to keep the connection
_DRAIN_SECONDS = 1.0  # ... unless they take longer than this to arrive


class Body:
    """A response body as stored (decoded from any Content-Encoding), read in
    bounded steps: the one length, limit and digest check of every download.

    Never reads or decompresses more than the promised ``expected_length`` + 1
    bytes (the one more shows the body is too long), nor more than
    ``max_bytes`` + 1; a declared Content-Length that breaks either is refused
    before the body is read. ``count`` is told of every byte passed on.
    """

    def __init__(
        self,
        url: Url,
        response: Response,
        max_bytes: int | None,
        limit_name: str | None,
        expected_length: int | None,
        count: Callable[[int], None],
    ) -> None:
        self.url = url
        self.length = 0
        self._response = response
        self._max = max_bytes
        self._limit_name = limit_name
        self._expected = expected_length
        self._count = count
        self._digest: Any = None
        self.promised_by = "the manifest"
        self._raw_deflate = False
        self.read_timeout: float | None = None  # of each read off the loop (``http.timeout``)
        self._decoder = _decoder(url, response.headers.get("content-encoding", ""))
        declared = header_count(response.headers.get("content-length"))
        self._declared: int | None = None  # the body's length, when the headers tell it
        # identity: the declared length is it
        if declared is not None and self._decoder is None:
            size = self._declared = declared
            if max_bytes is not None and size > max_bytes:
                raise _too_large(url, size, max_bytes, limit_name)
            if expected_length is not None and size != expected_length:
                raise IntegrityError(
                    url,
                    f"got {size} bytes, the manifest says {expected_length} "
                    "(by its Content-Length; not read)",
                )

    def hash_with(self, algorithm: str) -> None:
        self._digest = hashlib.new(algorithm)

    async def copy_to(self, out: BinaryIO | None) -> None:
        """Read the whole body into ``out`` (None: nowhere), hashing it on the way.

        The event loop only receives: the bytes are hashed and written in a worker
        thread, ``BATCH`` bytes at a time (hashlib and file writes release the
        GIL), while the socket keeps filling. Bounds are checked as each chunk
        arrives (``_take``), before it is hashed or written."""
        if self._decoder is None and self._declared is not None and self._declared >= OFF_LOOP_MIN:
            timeout = self.read_timeout if self.read_timeout is not None else 3600.0
            detached = detach(self._response, self._declared, timeout)
            if detached is not None:
                self.length = await copy_off_loop(detached, out, self._digest, self._count)
                return
        digest, self._digest = self._digest, None  # taken here, in order, off the loop

        def sink(batch: list[bytes]) -> None:
            if digest is not None:
                for chunk in batch:
                    digest.update(chunk)
            if out is not None:
                out.writelines(batch)

        batch: list[bytes] = []
        size = 0
        try:
            async for chunk in self:
                batch.append(chunk)
                size += len(chunk)
                if size >= BATCH:
                    await anyio.to_thread.run_sync(sink, batch)
                    batch, size = [], 0
            if batch:
                await anyio.to_thread.run_sync(sink, batch)
        finally:
            self._digest = digest

    async def read(self) -> bytes:
        """The whole body into memory, within the same bounds as iterating it.

        A body of declared length (already checked against the bounds) is read
        in one go where the transport can; any other is gathered chunk by chunk."""
        if self._declared is not None:
            whole = await read_declared(self._response, self._declared)
            if whole is not None:
                return self._take(whole)
        content = bytearray()
        async for chunk in self:
            content += chunk
        return bytes(content)

    def _budget(self) -> int:
        """How many more bytes may be taken: up to one past the tighter bound (0: no bound)."""
        expected, most = self._expected, self._max
        if expected is None:
            return 0 if most is None else most + 1 - self.length
        if most is not None and most < expected:
            return most + 1 - self.length
        return expected + 1 - self.length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for raw in self._response.aiter_raw():
            if self._decoder is None:
                if raw:
                    yield self._take(raw)
                continue
            for piece in self._decompress(raw):
                yield self._take(piece)
        if self._decoder is not None:
            rest = self._decoder.flush()
            if not self._decoder.eof:
                raise FetchError(self.url, "compressed body ends early (Content-Encoding)")
            if rest:
                yield self._take(rest)

    def _decompress(self, raw: bytes) -> Iterator[bytes]:
        """``raw`` decoded, at most ``_STEP`` bytes (or the budget) per piece: each
        piece is taken (and counted against the bounds) before the next is made."""
        data = raw
        while data:
            decoder = self._decoder
            assert decoder is not None
            if decoder.eof:  # trailing bytes after the compressed stream: ignored
                return
            budget = self._budget()
            try:
                out: bytes = decoder.decompress(data, min(budget, _STEP) if budget else _STEP)
            except zlib.error as exc:
                if self._raw_deflate_fallback():  # "deflate" sent without its zlib header
                    continue
                raise FetchError(
                    self.url, f"body does not decode as its Content-Encoding says ({exc})"
                ) from None
            tail: bytes = decoder.unconsumed_tail
            if not out and len(tail) >= len(data):  # no progress: cannot happen, never spin
                return
            data = tail
            if out:
                yield out

    def _raw_deflate_fallback(self) -> bool:
        """Some servers send raw deflate as ``deflate``; switch, if nothing was decoded yet."""
        encoding = self._response.headers.get("content-encoding", "").strip().lower()
        if encoding != "deflate" or self.length or self._raw_deflate:
            return False
        self._raw_deflate = True
        self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
        return True

    def _take(self, chunk: bytes) -> bytes:
        budget = self._budget()
        if budget and len(chunk) >= budget:  # past a bound: refuse, keeping none of it
            over = self.length + len(chunk)
            if self._expected is not None and over > self._expected:
                raise IntegrityError(
                    self.url,
                    f"more than the {self._expected} bytes the manifest promises; refused",
                )
            assert self._max is not None
            raise _too_large(self.url, None, self._max, self._limit_name)
        self.length += len(chunk)
        self._count(len(chunk))
        if self._digest is not None:
            self._digest.update(chunk)
        return chunk

    def check(self, expected_digest: str | None) -> str:
        """The body's hex digest ("" if not hashed), once its length and digest are checked."""
        if self._expected is not None and self.length != self._expected:
            raise IntegrityError(
                self.url, f"got {self.length} bytes, the manifest says {self._expected}"
            )
        digest: str = self._digest.hexdigest() if self._digest is not None else ""
        if expected_digest is not None and digest != expected_digest:
            name = self._digest.name if self._digest is not None else "digest"
            raise IntegrityError(
                self.url, f"{name} is {digest}, but {self.promised_by} says {expected_digest}"
            )
        return digest


def _decoder(url: Url, encoding: str) -> Any:
    """A zlib decompressor for the response's Content-Encoding; None for identity."""
    if not encoding:  # most answers: none given
        return None
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if codings in (["gzip"], ["x-gzip"]):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if codings == ["deflate"]:
        return zlib.decompressobj()
    raise FetchError(url, f"unsupported Content-Encoding {encoding[:40]!r}; refused")


async def drain(method: str, response: Response) -> None:
    """Read a small body nobody needs (HEAD, error pages), so that the connection
    can serve the next request: closing a response with its body unread closes
    the connection, and a crawl with many 404s would reconnect for each.

    Raw bytes, never decompressed; a body that fails or dawdles is given up on
    (its connection is then closed): the status is what the caller reports.
    """
    declared = header_count(response.headers.get("content-length"))
    if method == "HEAD" or (declared is not None and declared <= _DRAIN_MAX):
        with anyio.move_on_after(_DRAIN_SECONDS), contextlib.suppress(httpx.HTTPError):
            async for _ in response.aiter_raw():
                pass


def _too_large(url: Url, size: int | None, max_bytes: int, limit_name: str | None) -> FetchError:
    what = f"{size} bytes, over" if size is not None else "body over"
    setting = f" ({limit_name})" if limit_name else ""
    return FetchError(url, f"{what} the {max_bytes}-byte limit{setting}; refused")
