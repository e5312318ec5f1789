"""Lookups by spec on PostgreSQL read the membership groups once per statement.

PostgreSQL keeps no index by spec (migration 0015): a package's page rows and
its stays find their memberships by searching the arrays of
``membership_groups`` (a spec's stays too, but for one spec: one pass, each array
read twice, its two references to it). Searched once per spec (a semi-join or a
subplan per row of ``specs``), a page cost (specs of the package) x (every
membership of the release). Here, without timing, every statement those readers
send that reads ``membership_groups`` is run again: it must read no more blocks
of the table's TOAST (where the arrays are) than one read of every array takes
(searching a toasted array per spec detoasts it each time, whatever the plan's
shape), and under ``EXPLAIN ANALYZE`` scan the table once, nothing on the way
from that scan to the result running more than once (a ``Materialize`` or a
join rescanning it per spec, a correlated subplan). Both fail on the per-spec
form (20 TOAST blocks for 1). The answers themselves are the pages, serve and
show tests'.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio

from bigdb import generated_spec
from mirrorsync.location import PostgresUrl
from mirrorsync.store import Store, web, writes
from mirrorsync.store.manifests import package_rows, release_view

AT = "2026-11-20T08:00:00.000000Z"


async def _build(store: Store) -> None:
    """A release of three stacks holding 970 specs of 97 packages (root all, the
    others every other), churned once (so some groups are closed)."""
    source = await writes.ensure_source(store, "test", "catalog", "http://x.invalid/")
    specs = [generated_spec(i, "p") for i in range(970)]  # names p-0 .. p-96
    for k, name in enumerate(("root", "a", "b")):
        stack = (await writes.ensure_stack(store, source, "develop", name)).id
        held = specs[k :: 1 if k == 0 else 2]
        await writes.commit_snapshot(store, writes.Snapshot(stack, None, None, held, ()), AT)
        gone = [s.hash for s in held[: len(held) // 10]]
        await writes.commit_snapshot(
            store, writes.Snapshot(stack, None, None, (), gone), AT.replace("-20T", "-21T")
        )


Node = dict[str, Any]


def _paths(plan: Node, above: tuple[Node, ...] = ()) -> Iterator[tuple[Node, ...]]:
    """Each node of ``plan`` (subplans and CTEs included) with the nodes above it."""
    path = (*above, plan)
    yield path
    for child in plan.get("Plans", ()):
        yield from _paths(child, path)


async def _statements(store: Store, read: Any) -> list[tuple[str, Any]]:
    """The statements ``read()`` sends that read membership_groups, with parameters."""
    sent: list[tuple[str, Any]] = []
    execute = store.conn.execute

    def recording(sql: str, parameters: Any = ()) -> Any:
        sent.append((sql, parameters))
        return execute(sql, parameters)

    store.conn.execute = recording  # type: ignore[method-assign]
    try:
        await read()
    finally:
        del store.conn.execute
    with_groups = [(sql, p) for sql, p in sent if "membership_groups" in sql]
    assert with_groups, "the reader no longer reads membership_groups: update this test"
    return with_groups


async def _value(store: Store, sql: str, parameters: Any = ()) -> Any:
    async with store.conn.execute(sql, parameters) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def _toast_blocks(store: Store, sql: str, parameters: Any = ()) -> int:
    """Blocks of membership_groups' TOAST table that running ``sql`` reads (the
    arrays of the groups are stored there): the table's I/O statistics before and
    after, flushed at once (``pg_stat_force_next_flush``, PostgreSQL 15)."""

    async def counted() -> int:
        await _value(store, "SELECT pg_stat_force_next_flush()")  # flushed once idle
        return int(
            await _value(
                store,
                "SELECT coalesce(toast_blks_hit, 0) + coalesce(toast_blks_read, 0)"
                " FROM pg_statio_user_tables WHERE relname = 'membership_groups'",
            )
        )

    before = await counted()
    async with store.conn.execute(sql, parameters) as cursor:
        await cursor.fetchall()
    return await counted() - before


async def _check_once(store: Store, sql: str, parameters: Any, one_pass: int | None) -> None:
    """``sql`` scans membership_groups once, nothing above the scan runs again,
    and (``one_pass``: TOAST blocks one read of every array takes) it detoasts no
    array twice."""
    if one_pass is not None:
        read = await _toast_blocks(store, sql, parameters)
        assert read <= one_pass, f"{read} TOAST blocks read, {one_pass} in one pass: {sql}"
    async with store.conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", parameters) as cur:
        row = await cur.fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    scans = [
        p for p in _paths(plan[0]["Plan"]) if p[-1].get("Relation Name") == "membership_groups"
    ]
    assert len(scans) == 1, f"membership_groups scanned {len(scans)} times: {sql}"
    repeated = [
        f"{node['Node Type']} x{node['Actual Loops']}"
        for node in scans[0]
        if node["Actual Loops"] != 1
    ]
    assert not repeated, f"membership_groups read per row ({', '.join(repeated)}): {sql}"


def test_lookups_by_spec_read_the_membership_groups_once(postgres_url: str) -> None:
    async def run() -> None:
        async with await Store.open(PostgresUrl(postgres_url)) as store:
            await _build(store)
            view = await release_view(store, "develop", None)
            one_pass = None
            if int(await _value(store, "SHOW server_version_num")) >= 150000:
                one_pass = await _toast_blocks(
                    store, "SELECT sum(array_length(spec_ids, 1)) FROM membership_groups"
                )
                assert one_pass > 0, "root's arrays must be stored out of line for this test"
            package = generated_spec(7, "p").name  # 10 of the 970 specs
            readers = (
                lambda: package_rows(store, view, package),
                lambda: web.package_specs(store, package, limit=100),
            )
            for read in readers:
                rows = await read()
                assert rows, "the case must find something"
                for sql, parameters in await _statements(store, read):
                    await _check_once(store, sql, parameters, one_pass)

    anyio.run(run)
