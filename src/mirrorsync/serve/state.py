"""What every request of the web view shares: the read-only store, its cached answers,
the templates, and the one-line 404 (a module of its own so the route modules and the
application import it one way)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import jinja2
from aiohttp import web

from mirrorsync import health
from mirrorsync.config import Config
from mirrorsync.errors import MirrorsyncError, NoDatabaseError, UsageError
from mirrorsync.health import Health
from mirrorsync.serve import links
from mirrorsync.store import Store
from mirrorsync.store import web as web_store
from mirrorsync.store.location import PostgresUrl
from mirrorsync.units import human_size, human_time

log = logging.getLogger("mirrorsync.serve")

DEFAULT_LISTEN = "127.0.0.1:8080"
#: Longest a request may take (its queries and rendering) before it answers 503.
REQUEST_TIMEOUT = 15.0
#: How long a cached answer (health, sizes) is used when the database cannot say
#: whether it changed (PostgreSQL), and at most on SQLite.
CACHE_SECONDS = 5.0
#: The most specs a diff lists on each side (added, removed); the counts are whole.
DIFF_LIMIT = 500
#: How often the health model and the overview's figures are checked for a change.
WARM_SECONDS = 2.0

T = TypeVar("T")


class NotFound(Exception):
    """What a URL names is not in the database: 404 with this one line (names from
    the URL go in the page, escaped, never in the status line)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as (host, port); UsageError if not one."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text[:80]!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


class Memo:
    """A few computed answers (health, sizes, diffs), reused while the database has
    not changed: SQLite's ``data_version`` says so (``token``); without one
    (PostgreSQL), for ``CACHE_SECONDS``. ``max_age``: never longer than that, for
    an answer that time alone changes (the health model's ages)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[object, tuple[int | None, float, Any]] = OrderedDict()

    async def get(
        self,
        key: object,
        token: int | None,
        compute: Callable[[], Awaitable[T]],
        *,
        max_age: float | None = None,
    ) -> T:
        now = time.monotonic()
        held = self._items.get(key)
        ttl = CACHE_SECONDS if token is None else max_age
        if held is not None and held[0] == token and (ttl is None or now - held[1] < ttl):
            self._items.move_to_end(key)
            return held[2]  # type: ignore[no-any-return]
        value = await compute()
        self._items[key] = (token, now, value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return value


@dataclass
class State:
    """What every handler shares: the configuration, the one store, the caches."""

    config: Config
    base_url: str | None
    max_age: float | None
    templates: jinja2.Environment
    memo: Memo = field(default_factory=Memo)
    diffs: Memo = field(default_factory=lambda: Memo(32))  # up to 1,000 specs each
    _store: Store | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: SQLite opened with no -wal beside it (``immutable`` where its directory is
    #: not writable): the file's (inode, size, mtime) then, to notice a writer.
    _frozen: tuple[int, int, int] | None = None

    async def store(self) -> Store:
        """The database, opened read-only on first use (NoDatabaseError while there is none).

        A SQLite database opened while it had no -wal file may have been opened
        ``immutable`` (a directory this user cannot write), which never sees a
        change: once a writer has made a -wal or changed the file, it is opened
        again (and what was computed from it forgotten).
        """
        if self._store is not None and self._frozen is not None and self._written():
            async with self._lock:
                if self._store is not None and self._frozen is not None and self._written():
                    await self.close()
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                # Shielded: an open cut short by a stop would leave its thread
                # reporting to a loop that is gone.
                with anyio.CancelScope(shield=True):
                    opened = await Store.open_read_only(self.config.database_path)
                self._store, self._frozen = opened, self._signature()
            return self._store

    def _signature(self) -> tuple[int, int, int] | None:
        """The database file's (inode, size, mtime) if it has no -wal beside it."""
        where = self.config.database_path
        if isinstance(where, PostgresUrl) or Path(f"{where}-wal").exists():
            return None
        try:
            info = where.stat()
        except OSError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def _written(self) -> bool:
        where = self.config.database_path
        return Path(f"{where}-wal").exists() or self._signature() != self._frozen

    async def token(self) -> int | None:
        return await web_store.change_token(await self.store())

    async def health(self) -> Health:
        """The health model, as ``status --check`` assesses it (with ``--max-age`` if given)."""
        try:
            store = await self.store()
        except NoDatabaseError:
            return health.no_database(self.config)

        async def compute() -> Health:
            return await health.read(store, self.config, datetime.now(UTC), self.max_age)

        # Kept while the database is unchanged, for a minute at most (ages enter
        # the model: a stack goes stale with time alone).
        return await self.memo.get("health", await self.token(), compute, max_age=60.0)

    async def figures(self) -> dict[tuple[str, str, str], web_store.StackFigures]:
        """Each stack's bytes and last change (one grouped pass), kept as health is."""
        store = await self.store()
        return await self.memo.get(
            "figures", await self.token(), lambda: web_store.stack_figures(store)
        )

    async def bytes_history(
        self, source: str, release: str, stack: str
    ) -> list[web_store.VersionBytes] | None:
        """Each version's bytes of one stack (one grouped pass), kept as health is;
        None if there is no such stack."""
        store = await self.store()
        ref = await web_store.find_stack(store, source, release, stack)
        if ref is None:
            return None
        return await self.memo.get(
            ("bytes", ref.id, ref.version),
            await self.token(),
            lambda: web_store.bytes_history(store, ref.id, ref.version),
        )

    async def diff(self, ref: web_store.StackRef, a: int, b: int) -> web_store.DiffPage:
        """A diff page (its first :data:`DIFF_LIMIT` of each side), kept for the last
        few asked while the database is unchanged."""
        store = await self.store()
        return await self.diffs.get(
            (ref.id, a, b),
            await self.token(),
            lambda: web_store.diff_page(store, ref.id, a, b, limit=DIFF_LIMIT),
        )

    async def warm(self) -> None:
        """Keep the health model and the overview's figures computed ahead of the
        requests: again whenever the database changed (a sync committed), so a page
        never waits for the passes over every membership that they take."""
        done: object = None  # the database's token when all was last computed
        while True:
            try:
                h = await self.health()
                token = await self.token()
                state = (id(self.memo), token)  # a database opened again: anew
                if token is None or state != done:
                    await self.figures()
                    if token is not None:  # SQLite: it says when it changed
                        for s in h.stacks:
                            await self.bytes_history(s.row.source, s.row.release, s.row.stack)
                    done = state
            except MirrorsyncError:
                pass  # no database yet, or it cannot be read now: requests say so
            except Exception:
                log.exception("computing the health model ahead failed")
            await asyncio.sleep(WARM_SECONDS)

    async def close(self) -> None:
        # Answers from the old connection (its data_version too) are forgotten.
        self.memo, self.diffs = Memo(), Memo(32)
        if self._store is not None:
            with anyio.CancelScope(shield=True):
                await self._store.close()
            self._store = None

    def base(self, request: web.Request) -> str:
        """The site's absolute URL (``--base-url``, else the request's own origin)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return str(request.url.origin())


STATE = web.AppKey("state", State)


def state(request: web.Request) -> State:
    return request.app[STATE]


def render(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    feeds: tuple[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """A page: ``template`` with the feeds its head names (the feeds of all events
    unless ``feeds`` names others)."""
    atom, json_feed = feeds or links.feeds("all")
    text = (
        state(request)
        .templates.get_template(template)
        .render(feed_atom=atom, feed_json=json_feed, links=links, **context)
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mirrorsync.serve", "templates"),
        autoescape=True,  # every template, whatever its name: HTML and SVG alike
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = human_size
    env.filters["when"] = human_time
    env.filters["seg"] = links.seg
    return env
