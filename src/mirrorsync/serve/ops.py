"""``/metrics`` (Prometheus text, the metrics file's families) and ``/healthz``.

``/metrics`` is rendered by ``mirrorsync.metrics`` itself: the build, the
database's figures and the health model's, as the metrics file has them (the
last sync run's ``mirrorsync_last_run_*`` belong to that run, and stay in the
file it writes). ``/healthz`` answers 200 ``ok`` when the health model finds no
problem, else 503 with one line per problem, as ``status --check`` prints them.
"""

from __future__ import annotations

from aiohttp import web

from mirrorsync import metrics
from mirrorsync.errors import NoDatabaseError
from mirrorsync.serve.state import state


async def metrics_text(request: web.Request) -> str:
    st = state(request)
    families = [metrics.build_info()]
    try:
        store = await st.store()
    except NoDatabaseError:
        store = None
    if store is not None:
        families += await metrics.database_families(store)
    families += metrics.health_families(await st.health())
    return metrics.render(families)


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(
        body=(await metrics_text(request)).encode("utf-8"),
        headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
            "Cache-Control": "no-store",
        },
    )


async def healthz(request: web.Request) -> web.Response:
    h = await state(request).health()
    if h.healthy:
        return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})
    lines = "".join(f"{p.line}\n" for p in h.problems)
    return web.Response(text=lines, status=503, headers={"Cache-Control": "no-store"})
