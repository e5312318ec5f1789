"""The web view's newest-first event pages expand only the spans they show.

A stack version's spec events are one stored span (``event_rows.span``, issue 31);
the view ``events`` expands every span. The events page, the feeds and the API read
the newest few: reading them through the view cost 3.9 s a request over a history
of 120,000 events (``benchmarks/bench_serve.py``'s). Measured here in SQLite's
virtual-machine steps (its progress handler), which do not depend on the machine's
speed or load: a page must cost a small fraction of expanding the history, and
answer exactly what the view answers.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import aiosqlite
import anyio
import pytest

from bigdb import build_history
from mirrorsync.store import Store
from mirrorsync.store import web as web_store
from mirrorsync.store.eventlog import (
    EVENT_COLUMNS,
    EVENT_JOINS,
    Event,
    EventFilter,
    event_conditions,
)

PER_VERSION = 2_000
VERSIONS = 12


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("paging") / "state.db"
    build_history(path, stacks={("develop", "e4s"): PER_VERSION}, versions=VERSIONS)
    return path


async def _through_the_view(
    store: Store, where: EventFilter, before: int | None, limit: int
) -> list[Event]:
    sql = f"SELECT {EVENT_COLUMNS} FROM events e {EVENT_JOINS} WHERE e.id > ?"
    params: list[object] = [where.since]
    if before is not None:
        sql += " AND e.id < ?"
        params.append(before)
    conditions, more = event_conditions(store, where)
    sql += conditions + " ORDER BY e.id DESC LIMIT ?"
    params.extend([*more, limit])
    async with store.conn.execute(sql, params) as cursor:
        return [Event(*r) for r in await cursor.fetchall()]


class Steps:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        return 0  # go on


async def _measured(store: Store, read: Awaitable[list[Event]]) -> tuple[list[Event], int]:
    conn = store.conn
    assert isinstance(conn, aiosqlite.Connection)  # SQLite: its progress handler counts
    steps = Steps()
    await conn.set_progress_handler(steps, 1000)
    try:
        found = await read
    finally:
        await conn.set_progress_handler(lambda: 0, 1_000_000_000)
    return found, steps.count


def test_a_page_of_the_newest_events_expands_only_what_it_shows(history: Path) -> None:
    async def main() -> None:
        async with await Store.open(history, create=False) as store:
            newest = EventFilter()
            page, cost = await _measured(
                store, web_store.events_page(store, newest, before=None, limit=50)
            )
            whole, whole_cost = await _measured(store, _through_the_view(store, newest, None, 50))
            assert len(page) == 50
            assert page == whole
            # One span of twelve expanded, not all: well under a sixth of the view's cost.
            assert cost * 6 < whole_cost, (cost, whole_cost)

    anyio.run(main)


@pytest.mark.parametrize(
    "where",
    [
        EventFilter(),
        EventFilter(types=("spec.added",)),
        EventFilter(package="develope4s-1*"),
        EventFilter(types=("stack.created", "stack.updated")),
        EventFilter(since=PER_VERSION // 2),
    ],
    ids=["all", "type", "package-glob", "sparse-types", "since"],
)
def test_every_page_is_the_views_answer(history: Path, where: EventFilter) -> None:
    async def main() -> None:
        async with await Store.open(history, create=False) as store:
            for before in (None, 5 * PER_VERSION + 7, PER_VERSION + 1, 40, 2):
                for limit in (1, 51, 700):
                    page = await web_store.events_page(store, where, before=before, limit=limit)
                    assert page == await _through_the_view(store, where, before, limit), (
                        before,
                        limit,
                    )

    anyio.run(main)


def test_one_event_is_read_from_its_own_span(history: Path) -> None:
    async def main() -> None:
        async with await Store.open(history, create=False) as store:
            for event_id in (1, 2, PER_VERSION, PER_VERSION + 3, VERSIONS * PER_VERSION):
                async with store.conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events e {EVENT_JOINS} WHERE e.id = ?",
                    (event_id,),
                ) as cursor:
                    row = await cursor.fetchone()
                expected = Event(*row) if row else None
                assert await web_store.event(store, event_id) == expected
            assert await web_store.event(store, 10 * VERSIONS * PER_VERSION) is None

    anyio.run(main)
