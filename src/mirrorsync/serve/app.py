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
import time
from collections.abc import Awaitable, Callable

import anyio
from aiohttp import web

from mirrorsync.config import Config
from mirrorsync.errors import MirrorsyncError, NoDatabaseError, StoreError, UsageError
from mirrorsync.serve import api, feeds, ops, pages
from mirrorsync.serve.state import (
    REQUEST_TIMEOUT,
    STATE,
    NotFound,
    State,
    environment,
    log,
    parse_listen,
    render,
)

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
