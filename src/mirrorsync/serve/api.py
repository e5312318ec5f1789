"""The JSON API under ``/api/``: the same vocabulary as the CLI's ``--json``.

``/api/`` lists the endpoints. ``/api/status`` is ``status --json`` (one object
per stack) with each stack's ``url`` and ``bytes``; ``/api/stacks/S/R/N`` one of
them with its ``history`` (``history --json`` rows, each with its ``bytes``);
``/api/stacks/S/R/N/diff?from=&to=`` is ``diff --json`` (with ``added_count``
and ``removed_count``: the lists hold at most the page's limit); ``/api/events``
is ``events --json``'s objects, newest first, paged by ``before``;
``/api/packages/NAME`` every stay of a package's specs; ``/api/search?q=``
package names by prefix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from mirrorsync import health
from mirrorsync.health import StackHealth
from mirrorsync.serve import links
from mirrorsync.serve.pages import (
    PACKAGE_LIMIT,
    SEARCH_LIMIT,
    diff_of,
    events_of,
    find_stack,
    health_of,
    param,
)
from mirrorsync.serve.state import NotFound, state
from mirrorsync.store import queries
from mirrorsync.store import web as web_store


def stack_json(s: StackHealth, figures: web_store.StackFigures | None) -> dict[str, Any]:
    """One stack as ``status --json`` gives it, with its page and its bytes."""
    r = s.row
    return {
        **health.stack_json(s),
        "bytes": figures.bytes if figures else 0,
        "url": links.stack(r.source, r.release, r.stack),
    }


async def index(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "endpoints": {
                "status": "/api/status",
                "stack": "/api/stacks/{source}/{release}/{stack}",
                "diff": "/api/stacks/{source}/{release}/{stack}/diff?from=V&to=V",
                "events": "/api/events?since=&until=&type=&source=&release=&stack=&package="
                "&limit=&before=",
                "package": "/api/packages/{name}",
                "search": "/api/search?q=PREFIX",
                "feeds": links.feed("all", fmt="atom"),
                "metrics": "/metrics",
                "health": "/healthz",
            }
        }
    )


async def status(request: web.Request) -> web.Response:
    st = state(request)
    await st.store()  # none yet: 503, as every page
    h = await st.health()
    figures = await st.figures()
    return web.json_response(
        [stack_json(s, figures.get((s.row.source, s.row.release, s.row.stack))) for s in h.stacks]
    )


async def stack(request: web.Request) -> web.Response:
    st = state(request)
    ref = await find_stack(request)
    store = await st.store()
    found = health_of(await st.health(), ref)
    figures = await st.figures()
    sizes = await st.bytes_history(ref.source, ref.release, ref.stack) or []
    by_version = {s.version: s.bytes for s in sizes}
    body: dict[str, Any] = (
        stack_json(found, figures.get((ref.source, ref.release, ref.stack))) if found else {}
    )
    body["history"] = [
        {**dataclasses.asdict(r), "bytes": by_version.get(r.version, 0)}
        for r in await queries.history(store, ref.id)
    ]
    return web.json_response(body)


async def diff(request: web.Request) -> web.Response:
    d = await diff_of(request)
    a, b, result = d.a, d.b, d.page

    def specs(items: list[web_store.SizedSpec]) -> list[dict[str, Any]]:
        return [{**dataclasses.asdict(s.spec), "tarball_size": s.size} for s in items]

    return web.json_response(
        {
            "from_version": a,
            "to_version": b,
            "added": specs(result.added),
            "removed": specs(result.removed),
            "added_count": result.added_count,
            "removed_count": result.removed_count,
        }
    )


async def events(request: web.Request) -> web.Response:
    page, _given, _types, older, limit = await events_of(request)
    return web.json_response(
        {"events": [e.to_dict() for e in page], "next_before": older, "limit": limit}
    )


async def package(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    store = await state(request).store()
    stays, total = await web_store.package_specs(store, name, limit=PACKAGE_LIMIT)
    if not total:
        raise NotFound(f"no package {name} in the database")
    return web.json_response({"name": name, "total": total, "specs": [s.to_dict() for s in stays]})


async def search(request: web.Request) -> web.Response:
    store = await state(request).store()
    prefix = param(request, "q") or ""
    names = await web_store.package_names(store, prefix, limit=SEARCH_LIMIT) if prefix else []
    return web.json_response(
        {
            "q": prefix,
            "packages": [{"name": n, "specs": c, "url": links.package(n)} for n, c in names],
        }
    )


def routes(app: web.Application) -> None:
    get = app.router.add_get
    get("/api", index)
    get("/api/", index)
    get("/api/status", status)
    get("/api/stacks/{source}/{release}/{stack}", stack)
    get("/api/stacks/{source}/{release}/{stack}/diff", diff)
    get("/api/events", events)
    get("/api/packages/{name}", package)
    get("/api/search", search)
