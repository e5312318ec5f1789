"""The aiohttp application: one read-only store, the guards every request passes, the loop.

Why aiohttp.web: it is already a dependency (the fetch stack's HTTP/1.1 client),
runs on the asyncio loop the store's aiosqlite/psycopg connections already use,
is well kept, and needs no second server (uvicorn) or ASGI layer. Jinja2 renders
the pages with autoescaping on for every template: a value reaches HTML only
escaped, unless a template marks it safe, and none marks an upstream value so.

Guards: only GET and HEAD (anything else is 405); no request body is read; a
request that takes longer than :data:`REQUEST_TIMEOUT` answers 503; page sizes
are clamped; every error is one line in a page (or JSON under ``/api/``), never a
traceback. The database is opened on the first request that needs it and kept;
a database that is not there yet answers 503 until it is.
"""

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
from mirrorsync.errors import MirrorsyncError, NoDatabaseError, StoreError, UsageError
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


_SECURITY_HEADERS = {
    # No script runs, nothing loads from elsewhere, no frame embeds the pages.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self';"
    " base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

_READ_METHODS = ("GET", "HEAD")


def _error(request: web.Request, status: int, message: str, **headers: str) -> web.Response:
    """One line saying what failed: JSON under /api/, plain text for feeds and
    /metrics, a page elsewhere."""
    path = request.path
    if path.startswith("/api/") or path == "/api":
        response: web.Response = web.json_response({"error": message}, status=status)
    elif path.startswith(("/feeds/", "/metrics", "/healthz", "/static/")):
        response = web.Response(text=message + "\n", status=status)
    else:
        response = render(request, "error.html", status=status, title=f"{status}", message=message)
    response.headers.update(headers)
    return response


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Read-only methods only, a time limit, security headers, errors as one line;
    ``Server-Timing`` says how long the answer took to make (``app;dur=`` ms)."""
    started = time.perf_counter()
    if request.method not in _READ_METHODS:
        response = _error(
            request, 405, f"{request.method} not allowed: this site only reads", Allow="GET, HEAD"
        )
    else:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                response = await handler(request)  # type: ignore[assignment]
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            extra = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            response = _error(request, exc.status, exc.reason, **extra)
        except NotFound as exc:
            response = _error(request, 404, str(exc))
        except UsageError as exc:
            response = _error(request, 400, str(exc))
        except NoDatabaseError as exc:
            response = _error(request, 503, str(exc), **{"Retry-After": "60"})
        except StoreError as exc:
            response = _error(request, 503, f"the database cannot be read: {exc}")
        except MirrorsyncError as exc:
            response = _error(request, 500, str(exc))
        except TimeoutError:
            response = _error(request, 503, f"took longer than {REQUEST_TIMEOUT:.0f}s")
        except Exception:  # a bug: said in the log, one line to the client
            log.exception("%s %s failed", request.method, request.path[:200])
            response = _error(request, 500, "internal error (the server's log says more)")
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


async def _style(request: web.Request) -> web.Response:
    from importlib import resources

    css = resources.files("mirrorsync.serve").joinpath("templates/style.css").read_text("utf-8")
    return web.Response(
        text=css, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


def make_app(
    config: Config, *, base_url: str | None = None, max_age: float | None = None
) -> web.Application:
    """The application: every route is a GET (HEAD answered alike); nothing writes."""
    from mirrorsync.serve import api, feeds, ops, pages

    app = web.Application(middlewares=[guard], client_max_size=1024)
    app[STATE] = State(config, base_url, max_age, environment())
    get = app.router.add_get
    get("/", pages.overview)
    get("/stacks/{source}/{release}/{stack}", pages.stack)
    get("/stacks/{source}/{release}/{stack}/diff", pages.diff)
    get("/packages/{name}", pages.package)
    get("/events", pages.events)
    get("/events/{id:[0-9]{1,19}}", pages.event)
    get("/search", pages.search)
    get("/static/style.css", _style)
    api.routes(app)
    feeds.routes(app)
    get("/metrics", ops.metrics_handler)
    get("/healthz", ops.healthz)

    async def close(app: web.Application) -> None:
        await app[STATE].close()

    app.on_cleanup.append(close)
    return app


async def serve(
    config: Config,
    listen: str,
    *,
    stop: anyio.Event | None = None,
    base_url: str | None = None,
    max_age: float | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled); then stop taking
    connections, let the requests under way finish (5 s at most), close the store."""
    host, port = parse_listen(listen)
    app = make_app(config, base_url=base_url, max_age=max_age)
    runner = web.AppRunner(
        app,
        handle_signals=False,  # the CLI's signal handling stops it (cli/signals.py)
        access_log=None,
        shutdown_timeout=5.0,
        keepalive_timeout=15.0,
        max_line_size=8190,
        max_field_size=8190,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(f"--listen {listen}: cannot listen there: {exc.strerror}") from None
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        if ready is not None:
            ready(f"http://{shown}:{bound[1]}/")
        # The health model and the sizes are computed ahead in a task of this one
        # (anyio's, so a stop never cuts the database's open short).
        async with anyio.create_task_group() as tg:
            tg.start_soon(app[STATE].warm)
            if stop is None:
                await anyio.sleep_forever()
            else:
                await stop.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
