"""Unpacking gzip data from upstream without trusting its size: bounded output.

A gzip stream of zeros unpacks to about 1,000 times its size: a 4 MB index
blob (within ``limits.index``) unpacked in one call would take 4 GB of memory
before any check could run. :func:`gunzip` unpacks one bounded step at a time
and stops, with one line naming the URL and the limit, as soon as the output
passes the configured limit or, past its first :data:`RATIO_FREE` bytes, grows
more than :data:`MAX_RATIO` times the input consumed so far (real indexes
unpack to 3-10 times their size; a bomb is caught after about 1 MiB).
"""

from __future__ import annotations

import io
import zlib

from mirrorsync.errors import FetchError, FormatError

#: Output allowed at any ratio: small documents compress well and are harmless.
RATIO_FREE = 1 << 20
#: Past RATIO_FREE, the most output allowed per byte of input consumed.
MAX_RATIO = 100
_IN_STEP = 64 << 10  # input fed at once
_OUT_STEP = 1 << 20  # most output made at once


def gunzip(
    data: bytes,
    url: str,
    *,
    max_bytes: int | None,
    limit_name: str = "limits.index",
    what: str = "index",
) -> bytes:
    """``data`` (gzip) unpacked: at most ``max_bytes`` of output (None: no limit but
    the ratio), at most :data:`MAX_RATIO` times the input past :data:`RATIO_FREE`.

    Over either bound: FetchError (the stack fails for this run, as for a body
    over its limit). Not gzip, or cut short: FormatError. ``what`` names the
    document in messages (``index``); ``limit_name`` the setting of ``max_bytes``.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    # BytesIO: its getvalue() hands its buffer over (trimmed in place) rather than
    # copying it, so a large index takes its size in memory once, not twice.
    out = io.BytesIO()
    size = 0
    view = memoryview(data)
    consumed = 0  # input bytes handed to the inflater so far
    try:
        while not inflater.eof:
            pending: bytes | memoryview = inflater.unconsumed_tail
            if not pending:
                if consumed >= len(data):
                    break
                pending = view[consumed : consumed + _IN_STEP]
                consumed += len(pending)
            step = _OUT_STEP if max_bytes is None else min(_OUT_STEP, max_bytes + 1 - size)
            size += out.write(inflater.decompress(pending, max(step, 1)))
            if max_bytes is not None and size > max_bytes:
                raise FetchError(
                    url,
                    f"gzip {what} over the {max_bytes}-byte limit ({limit_name}) once unpacked; "
                    "refused",
                )
            used = consumed - len(inflater.unconsumed_tail)
            if size > RATIO_FREE and size > MAX_RATIO * used:
                raise FetchError(
                    url,
                    f"gzip {what} unpacks to over {MAX_RATIO} times its size "
                    f"({size} bytes from {used}; a decompression bomb?); refused",
                )
    except zlib.error as exc:
        raise FormatError(f"build cache {what}", f"not valid gzip data ({exc})", url) from None
    if not inflater.eof:
        raise FormatError(f"build cache {what}", "gzip data is truncated", url)
    return out.getvalue()
