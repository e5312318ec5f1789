"""Atom (RFC 4287) and JSON Feed 1.1 of the events: all, per release, per stack,
per package, per event type.

``/feeds/all.atom``, ``/feeds/releases/SOURCE/RELEASE.atom``,
``/feeds/stacks/SOURCE/RELEASE/STACK.atom``, ``/feeds/packages/NAME.atom``,
``/feeds/types/TYPE.atom``; ``.json`` for the JSON Feed of each. Each holds the
newest :data:`ENTRIES` events, newest first; an entry is one event: its change as
its title and as HTML (names escaped), and a link to its page (``/events/ID``,
which links on to the stack, the diff and the package).

Atom is written with ElementTree, so the HTML content (escaped once by the
template) is escaped once more as XML text, exactly as ``type="html"`` wants.
Characters XML 1.0 cannot hold (control characters in an upstream name) are
replaced by U+FFFD before they reach either feed.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from aiohttp import web

from mirrorsync.config import EVENT_TYPES
from mirrorsync.serve import links
from mirrorsync.serve.pages import event_links
from mirrorsync.serve.state import NotFound, state
from mirrorsync.store import web as web_store
from mirrorsync.store.eventlog import Event, EventFilter

#: Events a feed holds: the newest ones.
ENTRIES = 50
ATOM = "http://www.w3.org/2005/Atom"
JSON_FEED = "https://jsonfeed.org/version/1.1"
#: When a feed has no entry yet: its ``updated`` stays fixed, not "now".
EPOCH = "1970-01-01T00:00:00Z"

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """``value`` with what XML 1.0 cannot hold replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", value)


def literal(name: str) -> str:
    """A name as a glob matching only itself (the event filters take globs)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


@dataclass(frozen=True, slots=True)
class Scope:
    """What one feed holds: its title, its filter, and the page it mirrors."""

    title: str
    where: EventFilter
    page: str  # the HTML page the feed belongs to (a path)
    kind: str
    names: tuple[str, ...]


def scope(request: web.Request) -> Scope:
    info = request.match_info
    kind = info.get("kind", "all")
    if kind == "all":
        return Scope("mirrorsync: all events", EventFilter(), "/", "all", ())
    if kind == "releases":
        source, release = info["source"], info["name"]
        return Scope(
            f"mirrorsync: {source}:{release}",
            EventFilter(source=literal(source), release=literal(release)),
            links.events(source=literal(source), release=literal(release)),
            kind,
            (source, release),
        )
    if kind == "stacks":
        source, release, stack = info["source"], info["release"], info["name"]
        return Scope(
            f"mirrorsync: {release}/{stack}",
            EventFilter(source=literal(source), release=literal(release), stack=literal(stack)),
            links.stack(source, release, stack),
            kind,
            (source, release, stack),
        )
    if kind == "packages":
        name = info["name"]
        return Scope(
            f"mirrorsync: package {name}",
            EventFilter(package=literal(name)),
            links.package(name),
            kind,
            (name,),
        )
    event_type = info["name"]
    if event_type not in EVENT_TYPES:
        raise NotFound(f"no event type {event_type[:40]}")
    return Scope(
        f"mirrorsync: {event_type} events",
        EventFilter(types=(event_type,)),
        links.events(type=event_type),
        "types",
        (event_type,),
    )


def title(e: Event) -> str:
    """The change in one line: ``develop/e4s v5: +zlib@1.3.1``."""
    where = f"{e.release}/{e.stack}" if e.stack else e.release
    if e.stack_version:
        where += f" v{e.stack_version}"
    sign = {"spec.added": "+", "spec.removed": "-"}.get(e.type, "")
    if e.name is not None:
        return f"{where}: {sign}{e.name}@{e.version} ({e.type})"
    if e.mirror is not None:
        return f"mirror {e.mirror}: +{e.added} -{e.removed} ({e.type})"
    return f"{where}: {e.type}"


def content_html(request: web.Request, e: Event, base: str) -> str:
    template = state(request).templates.get_template("entry.html")
    absolute = {k: base + v for k, v in event_links(e).items()}
    return template.render(e=e, to=absolute, page=base + links.event(e.id))


async def _events(request: web.Request) -> tuple[Scope, list[Event]]:
    s = scope(request)
    store = await state(request).store()
    found = await web_store.events_page(store, s.where, before=None, limit=ENTRIES)
    return s, found


async def atom(request: web.Request) -> web.Response:
    s, found = await _events(request)
    base = state(request).base(request)
    self_url = base + links.feed(s.kind, *s.names, fmt="atom")
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(
            parent, f"{{{ATOM}}}{tag}", {k: xml_text(v) for k, v in attrs.items()}
        )
        if text is not None:
            element.text = xml_text(text)
        return element

    sub(feed, "id", self_url)
    sub(feed, "title", s.title)
    sub(feed, "updated", found[0].occurred_at if found else EPOCH)
    sub(feed, "link", rel="self", type="application/atom+xml", href=self_url)
    sub(feed, "link", rel="alternate", type="text/html", href=base + s.page)
    author = sub(feed, "author")
    sub(author, "name", "mirrorsync")
    sub(feed, "generator", "mirrorsync")
    for e in found:
        entry = sub(feed, "entry")
        page = base + links.event(e.id)
        sub(entry, "id", page)
        sub(entry, "title", title(e))
        sub(entry, "updated", e.occurred_at)
        sub(entry, "link", rel="alternate", type="text/html", href=page)
        sub(entry, "category", term=e.type)
        sub(entry, "content", content_html(request, e, base), type="html")
    body = ET.tostring(feed, encoding="unicode", xml_declaration=False)
    return web.Response(
        text='<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n",
        content_type="application/atom+xml",
        charset="utf-8",
    )


async def json_feed(request: web.Request) -> web.Response:
    s, found = await _events(request)
    base = state(request).base(request)
    document = {
        "version": JSON_FEED,
        "title": s.title,
        "home_page_url": base + s.page,
        "feed_url": base + links.feed(s.kind, *s.names, fmt="json"),
        "authors": [{"name": "mirrorsync"}],
        "items": [
            {
                "id": base + links.event(e.id),
                "url": base + links.event(e.id),
                "title": title(e),
                "content_html": content_html(request, e, base),
                "date_published": e.occurred_at,
                "tags": [e.type],
                "_mirrorsync": e.to_dict(),
            }
            for e in found
        ],
    }
    return web.Response(
        text=json.dumps(document, ensure_ascii=False, indent=1),
        content_type="application/feed+json",
        charset="utf-8",
    )


async def _feed(request: web.Request) -> web.Response:
    if request.match_info["fmt"] == "atom":
        return await atom(request)
    return await json_feed(request)


def routes(app: web.Application) -> None:
    get = app.router.add_get
    fmt = "{fmt:atom|json}"
    get(f"/feeds/all.{fmt}", _feed)
    get("/feeds/{kind:releases}/{source}/{name}." + fmt, _feed)
    get("/feeds/{kind:stacks}/{source}/{release}/{name}." + fmt, _feed)
    get("/feeds/{kind:packages}/{name}." + fmt, _feed)
    get("/feeds/{kind:types}/{name}." + fmt, _feed)
