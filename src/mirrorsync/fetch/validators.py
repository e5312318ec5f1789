"""Which validators a response leaves to ask with next time, and when to ask without them.

A conditional request (``If-None-Match`` / ``If-Modified-Since``) is only as
good as its validator. RFC 9110 section 8.8.2.2: a ``Last-Modified`` that is
not at least one second earlier than the response's ``Date`` is weak, since
the resource may change again within that same second without its date
moving: a server with one-second dates (Python's ``http.server``, many static
servers, file systems with coarse mtimes) would then answer 304 to a changed
file, and keep answering so until the file changes again. Such a date is not
kept: the next request is unconditional, and an unchanged body is recognised
by its checksum further on, so nothing is written twice.

An ``ETag`` is preferred when the server sends one (S3, CloudFront, nginx),
but not when it is made of such a date (nginx's is the one-second mtime and
the size). And for servers whose validators lie, ``http.revalidate_after``: a document
last fetched in full longer ago than that is asked for without conditions once.
"""

from __future__ import annotations

import email.utils
import functools
import re
from datetime import UTC, datetime
from typing import Protocol

from mirrorsync.fetch.answer import HeaderLookup

#: RFC 9110 8.8.2.2: a date is strong only if at least this much earlier than Date.
_STRONG_MARGIN_SECONDS = 1.0


class Cached(Protocol):
    """What the HTTP cache keeps of a document's last full answer."""

    @property
    def etag(self) -> str | None: ...

    @property
    def last_modified(self) -> str | None: ...

    @property
    def fetched_at(self) -> str | None: ...  # ISO 8601 UTC of the last 200; None: unknown


@functools.lru_cache(maxsize=256)
def _http_date(value: str | None) -> datetime | None:
    """An HTTP date (IMF-fixdate or the obsolete forms) as an aware datetime, or None.

    Remembered (a few hundred strings, each bounded by the header size limit): a
    server sends the same Last-Modified and Date again and again, and parsing
    them with ``email.utils`` on every answer was 7.6% of a manifest crawl."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC, as HTTP dates always are
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def kept_validators(
    headers: HeaderLookup, received: datetime | None = None
) -> tuple[str | None, str | None]:
    """(ETag, Last-Modified) of a 200 that may be sent back as conditions next time.

    ``Last-Modified`` is kept only when it is at least one second earlier than
    the response's ``Date`` (or ``received``, the receipt time, when there is
    no usable ``Date``); a date that cannot be parsed is not kept either. When
    the date is too recent, an ``ETag`` made of it is not kept either.
    """
    etag = headers.get("etag") or None
    last_modified = headers.get("last-modified") or None
    modified = _http_date(last_modified)
    if modified is None:
        return etag, None
    date = _http_date(headers.get("date")) or received or datetime.now(UTC)
    if (date - modified).total_seconds() < _STRONG_MARGIN_SECONDS:
        # Modified within the second of the answer: the date is weak, and so is
        # an ETag made of it (nginx's is the mtime in seconds and the size: a
        # rewrite of index.json.hash, always 64 bytes, keeps it). This costs one
        # unconditional request, only right after a change.
        return (None if _made_of_date(etag, modified) else etag), None
    return etag, last_modified


#: nginx's ETag, and fetch/files.py's: "<hex mtime>-<hex size>" (W/ when compressed).
_DATED_ETAG = re.compile(r'^(?:W/)?"([0-9a-f]{1,16})-[0-9a-f]{1,16}"$')


def _made_of_date(etag: str | None, modified: datetime) -> bool:
    """Whether ``etag`` is a one-second date and a size (nginx's, or a ``file://``
    ETag on a file system whose mtimes are whole seconds), so no stronger than it."""
    match = _DATED_ETAG.match(etag or "")
    if match is None:
        return False
    stamp, seconds = int(match[1], 16), int(modified.timestamp())
    return stamp in (seconds, seconds * 1_000_000_000)


def _stored_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def conditions(cached: Cached | None, now: datetime, revalidate_after: float) -> dict[str, str]:
    """The request headers that make a GET conditional; empty: ask unconditionally.

    Unconditional when nothing is cached, when no validator was kept, or when
    the document was last fetched in full more than ``revalidate_after`` seconds
    before ``now`` (or when is unknown: a cache entry older than that record).
    An ``ETag`` is sent alone when there is one (a server weighs it first).
    """
    if cached is None or not (cached.etag or cached.last_modified):
        return {}
    fetched = _stored_time(cached.fetched_at)
    if fetched is None or (now - fetched).total_seconds() > revalidate_after:
        return {}
    if cached.etag:
        return {"if-none-match": cached.etag}
    assert cached.last_modified is not None
    return {"if-modified-since": cached.last_modified}
