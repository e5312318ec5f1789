"""Any exception, at a stack's or a source's boundary, as mirrorsync's own one-line
error: what ``last_error`` records and the log line says."""

from __future__ import annotations

import contextlib

import anyio
import httpx

from mirrorsync.errors import MirrorsyncError


def as_error(exc: BaseException) -> MirrorsyncError:
    """Any exception as mirrorsync's own one-line error (a library's, naming its URL)."""
    if isinstance(exc, MirrorsyncError):
        return exc
    if isinstance(exc, BaseExceptionGroup):  # a task group's: its first real error
        first = next(
            (e for e in exc.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())),
            exc.exceptions[0],
        )
        return as_error(first)
    where = ""
    if isinstance(exc, httpx.RequestError):
        with contextlib.suppress(RuntimeError):  # no request attached
            where = f"{exc.request.url}: "
    text = str(exc) or "(no message)"
    return MirrorsyncError(f"{where}unexpected {type(exc).__name__}: {text}")
