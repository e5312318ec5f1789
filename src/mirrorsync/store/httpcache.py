"""The HTTP cache: a document's last full answer, kept to ask for it conditionally.

Its validators (ETag, Last-Modified; see ``fetch.validators``) and its body: a
small document's own, or an ``index.json``'s sha256 (never the index itself), so
the next request carries If-None-Match / If-Modified-Since. URLs are stored with
their credentials masked (:mod:`mirrorsync.redact`).
"""

from __future__ import annotations

from typing import NamedTuple

from mirrorsync.redact import redact_url
from mirrorsync.store.db import Store


class CachedDocument(NamedTuple):
    """A document's last full answer: the validators kept from it (see
    ``fetch.validators``), its body, and when it was fetched in full."""

    etag: str | None
    last_modified: str | None
    body: bytes
    fetched_at: str | None  # ISO 8601 UTC; None: cached before migration 0008


async def cached_document(store: Store, url: str) -> CachedDocument | None:
    async with store.conn.execute(
        "SELECT etag, last_modified, body, fetched_at FROM http_cache WHERE url = ?",
        (redact_url(url),),
    ) as cursor:
        row = await cursor.fetchone()
    return CachedDocument(row[0], row[1], bytes(row[2]), row[3]) if row else None


async def cache_document(
    store: Store,
    url: str,
    etag: str | None,
    last_modified: str | None,
    body: bytes,
    *,
    fetched_at: str,
) -> None:
    """Keep a full (200) answer's validators and body, or forget the URL when
    it gave none worth keeping (its next request is then unconditional)."""
    async with store.transaction() as conn:
        if etag is None and last_modified is None:
            await conn.execute("DELETE FROM http_cache WHERE url = ?", (redact_url(url),))
            return
        await conn.execute(
            "INSERT INTO http_cache (url, etag, last_modified, body, fetched_at)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (url) DO UPDATE SET etag = excluded.etag,"
            " last_modified = excluded.last_modified, body = excluded.body,"
            " fetched_at = excluded.fetched_at",
            (redact_url(url), etag, last_modified, body, fetched_at),
        )
