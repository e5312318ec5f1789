"""The HTML pages: overview, stack, diff, package, events, one event, search.

Each handler asks the store (bounded queries) and the health model, then renders
one template. Names from the URL are taken literally (no globs), except the
events page's filters, which are the ``events`` command's (names or globs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from mirrorsync.config import EVENT_TYPES
from mirrorsync.errors import UsageError
from mirrorsync.health import Health, StackHealth
from mirrorsync.serve import chart, links
from mirrorsync.serve.state import DIFF_LIMIT, NotFound, render, state
from mirrorsync.store import eventlog, instants, queries
from mirrorsync.store import names as name_store
from mirrorsync.store import web as web_store
from mirrorsync.store.eventlog import EventFilter
from mirrorsync.store.overview import StackStatus

#: Rows a page shows at most: a package's stays, search results.
PACKAGE_LIMIT = 1000
SEARCH_LIMIT = 100
#: Events per page: the default and the most a ``limit`` may ask.
EVENTS_PAGE = 100
EVENTS_PAGE_MAX = 500
#: Longest value a query parameter may have (names, dates, prefixes).
MAX_PARAM = 200
#: The largest id SQLite and PostgreSQL store (a signed 64-bit integer): a larger
#: one in a URL names nothing, rather than failing the query.
MAX_ID = 2**63 - 1


def param(request: web.Request, name: str) -> str | None:
    """A query parameter, stripped; None when absent or empty; UsageError when too long."""
    value = request.query.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > MAX_PARAM:
        raise UsageError(f"{name}: longer than {MAX_PARAM} characters")
    return value.strip()


def number(request: web.Request, name: str, *, low: int, high: int, default: int) -> int:
    """A whole-number query parameter, clamped to ``low..high``."""
    value = param(request, name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise UsageError(f"{name}: expected a whole number, got {value[:40]!r}")
    return max(low, min(high, int(value)))


async def find_stack(request: web.Request) -> web_store.StackRef:
    info = request.match_info
    store = await state(request).store()
    ref = await web_store.find_stack(store, info["source"], info["release"], info["stack"])
    if ref is None:
        raise NotFound(f"no stack {info['source']}:{info['release']}/{info['stack']}")
    return ref


def health_of(h: Health, ref: web_store.StackRef) -> StackHealth | None:
    """The health model's view of one stack (None if it has none)."""
    subject = f"{ref.source}:{ref.release}/{ref.stack}"
    return next((s for s in h.stacks if s.subject == subject), None)


@dataclass(frozen=True, slots=True)
class DiffOf:
    """A diff page asked for by ``from`` and ``to`` (defaults: the latest version and
    the one before it), with the versions they resolved to."""

    ref: web_store.StackRef
    given_from: str | None
    given_to: str | None
    a: int
    b: int
    page: web_store.DiffPage


async def diff_of(request: web.Request) -> DiffOf:
    st = state(request)
    ref = await find_stack(request)
    store = await st.store()
    given_from, given_to = param(request, "from"), param(request, "to")
    a = await queries.resolve_version(store, ref.id, given_from or str(max(ref.version - 1, 0)))
    b = await queries.resolve_version(store, ref.id, given_to or str(ref.version))
    return DiffOf(ref, given_from, given_to, a, b, await st.diff(ref, a, b))


@dataclass(frozen=True, slots=True)
class StackLine:
    """One stack on the overview."""

    health: StackHealth
    figures: web_store.StackFigures | None

    @property
    def row(self) -> StackStatus:
        return self.health.row

    @property
    def url(self) -> str:
        return links.stack(self.row.source, self.row.release, self.row.stack)


async def overview(request: web.Request) -> web.Response:
    st = state(request)
    await st.store()  # none yet: 503, as every page
    h = await st.health()
    figures = await st.figures()
    releases: dict[tuple[str, str], list[StackLine]] = {}
    for s in h.stacks:
        key = (s.row.source, s.row.release, s.row.stack)
        releases.setdefault((s.row.source, s.row.release), []).append(
            StackLine(s, figures.get(key))
        )
    return render(
        request,
        "overview.html",
        title="mirrorsync",
        health=h,
        releases=releases,
        several_sources=len({s.row.source for s in h.stacks}) > 1,
    )


async def stack(request: web.Request) -> web.Response:
    st = state(request)
    ref = await find_stack(request)
    store = await st.store()
    history = await queries.history(store, ref.id)
    sizes = await st.bytes_history(ref.source, ref.release, ref.stack) or []
    stack_health = health_of(await st.health(), ref)
    by_version = {s.version: s for s in sizes}
    return render(
        request,
        "stack.html",
        feeds=links.feeds("stacks", ref.source, ref.release, ref.stack),
        title=f"{ref.release}/{ref.stack}",
        ref=ref,
        health=stack_health,
        chart=chart.build(history, sizes),
        versions=list(reversed(history)),
        sizes=by_version,
        latest=ref.version,
    )


async def diff(request: web.Request) -> web.Response:
    d = await diff_of(request)
    ref, a, b = d.ref, d.a, d.b
    return render(
        request,
        "diff.html",
        feeds=links.feeds("stacks", ref.source, ref.release, ref.stack),
        title=f"{ref.release}/{ref.stack} v{a} → v{b}",
        ref=ref,
        diff=d.page,
        given_from=d.given_from or "",
        given_to=d.given_to or "",
        limit=DIFF_LIMIT,
    )


async def package(request: web.Request) -> web.Response:
    st = state(request)
    name = request.match_info["name"]
    store = await st.store()
    stays, total = await web_store.package_specs(store, name, limit=PACKAGE_LIMIT)
    if not total:
        raise NotFound(f"no package {name} in the database")
    return render(
        request,
        "package.html",
        feeds=links.feeds("packages", name),
        title=name,
        name=name,
        stays=stays,
        total=total,
        specs=len({s.spec.hash for s in stays}),
        limit=PACKAGE_LIMIT,
    )


def event_filter(request: web.Request) -> tuple[EventFilter, dict[str, object]]:
    """The ``events`` command's filters from the query (``since``, ``until``, ``type``
    (repeatable), ``source``, ``release``, ``stack``, ``package``), and the values
    given, to carry into the next page's link."""
    since = param(request, "since")
    until = param(request, "until")
    types = [t for t in request.query.getall("type", []) if t]
    for t in types:
        if t not in EVENT_TYPES:
            raise UsageError(f"type: {t[:40]!r} is not an event type ({', '.join(EVENT_TYPES)})")
    since_id, since_at = 0, None
    if since is not None and since.isascii() and since.isdigit() and len(since) <= 19:
        since_id = min(int(since), MAX_ID)
    elif since is not None:
        since_at = instants.instant(since, end_of_day=False)
    names = {k: param(request, k) for k in ("source", "release", "stack", "package")}
    where = EventFilter(
        since=since_id,
        since_at=since_at,
        until_at=None if until is None else instants.instant(until),
        types=types,
        source=names["source"],
        release=names["release"],
        stack=names["stack"],
        package=names["package"],
    )
    given: dict[str, object] = {"since": since, "until": until, **names}
    return where, given


async def events_of(
    request: web.Request,
) -> tuple[list[eventlog.Event], dict[str, object], list[str], int | None, int]:
    """One page of events, newest first: (events, filters given, types, next ``before``, limit)."""
    st = state(request)
    store = await st.store()
    where, given = event_filter(request)
    for option in ("source", "release", "stack", "package"):  # a glob matching nothing: 400
        await name_store.require_match(store, option, getattr(where, option))
    limit = number(request, "limit", low=1, high=EVENTS_PAGE_MAX, default=EVENTS_PAGE)
    before = param(request, "before")
    before_id = None
    if before is not None:
        before_id = number(request, "before", low=0, high=MAX_ID, default=0)
    found = await web_store.events_page(store, where, before=before_id, limit=limit + 1)
    more = len(found) > limit
    page = found[:limit]
    return page, given, list(where.types), (page[-1].id if more else None), limit


async def events(request: web.Request) -> web.Response:
    page, given, types, older, limit = await events_of(request)
    query: list[tuple[str, object]] = [(k, v) for k, v in given.items() if v is not None]
    query += [("type", t) for t in types]
    if limit != EVENTS_PAGE:
        query.append(("limit", limit))
    from urllib.parse import urlencode

    older_url = f"/events?{urlencode([*query, ('before', older)])}" if older else None
    return render(
        request,
        "events.html",
        feeds=_events_feeds(given, types),
        title="events",
        events=page,
        given=given,
        types=types,
        all_types=EVENT_TYPES,
        older_url=older_url,
        limit=limit,
    )


def _events_feeds(given: Mapping[str, object], types: list[str]) -> tuple[str, str]:
    """The feeds closest to what the events page shows."""
    if given.get("package") and not any(ch in str(given["package"]) for ch in "*?["):
        return links.feeds("packages", str(given["package"]))
    if len(types) == 1:
        return links.feeds("types", types[0])
    return links.feeds("all")


def event_links(e: eventlog.Event) -> dict[str, str]:
    """The pages an event leads to: its stack, the diff it is part of, its package."""
    out: dict[str, str] = {}
    if e.stack is not None:
        out["stack"] = links.stack(e.source, e.release, e.stack)
        if e.stack_version and e.type in ("spec.added", "spec.removed"):
            out["diff"] = links.diff(
                e.source, e.release, e.stack, e.stack_version - 1, e.stack_version
            )
    if e.name is not None:
        out["package"] = links.package(e.name)
    return out


async def event(request: web.Request) -> web.Response:
    store = await state(request).store()
    event_id = int(request.match_info["id"])
    found = await web_store.event(store, event_id) if event_id <= MAX_ID else None
    if found is None:
        raise NotFound(f"no event {event_id}")
    return render(request, "event.html", title=f"event {found.id}", e=found, to=event_links(found))


async def search(request: web.Request) -> web.Response:
    store = await state(request).store()
    prefix = param(request, "q") or ""
    names = await web_store.package_names(store, prefix, limit=SEARCH_LIMIT) if prefix else []
    return render(request, "search.html", title="search", q=prefix, names=names, limit=SEARCH_LIMIT)
