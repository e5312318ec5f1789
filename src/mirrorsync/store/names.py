"""Names given on the command line and in the web view's addresses, resolved against
the database: a stack by (source, release, stack), each a name or a glob; its label;
every stack's label; whether a filter's glob matches anything known."""

from __future__ import annotations

from mirrorsync.errors import UsageError
from mirrorsync.store.db import Store
from mirrorsync.store.overview import name_filter


async def stack_labels(store: Store) -> list[str]:
    """``source:release/stack`` of every stack the database knows (the events table's
    stack column, sized to them before the first event is streamed)."""
    async with store.conn.execute(
        "SELECT src.name, st.release, st.name FROM stacks st JOIN sources src"
        " ON src.id = st.source_id"
    ) as cursor:
        return [f"{r[0]}:{r[1]}/{r[2]}" for r in await cursor.fetchall()]


async def find_stack(store: Store, release: str, stack: str, source: str | None = None) -> int:
    """The id of (source, release, stack), each a name or a glob; UsageError if no
    stack matches, or several do (naming them)."""
    sql = (
        "SELECT st.id, src.name, st.release, st.name FROM stacks st"
        " JOIN sources src ON src.id = st.source_id WHERE 1 = 1"
    )
    params: list[object] = []
    for column, value in (
        ("st.release", release),
        ("st.name", stack),
        ("src.name", source or None),
    ):
        if value is not None:
            condition, param = name_filter(store, column, value)
            sql += f" AND {condition}"
            params.append(param)
    async with store.conn.execute(sql + " ORDER BY src.name, st.release, st.name", params) as c:
        rows = list(await c.fetchall())
    where = f"{source + ':' if source else ''}{release}/{stack}"
    if not rows:
        raise UsageError(f"no stack {where} in {store.path}")
    if len(rows) > 1 and len({(r[2], r[3]) for r in rows}) == 1:
        names = ", ".join(sorted(r[1] for r in rows))
        raise UsageError(f"{where} exists in several sources ({names}); pass --source")
    if len(rows) > 1:
        names = ", ".join(f"{r[1]}:{r[2]}/{r[3]}" for r in rows[:10])
        more = " and more" if len(rows) > 10 else ""
        raise UsageError(f"{where} matches several stacks ({names}{more}); name one")
    return int(rows[0][0])


async def stack_label(store: Store, stack_id: int) -> str:
    """``release/stack`` of a stack, as titles print it."""
    async with store.conn.execute(
        "SELECT release, name FROM stacks WHERE id = ?", (stack_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return f"{row[0]}/{row[1]}" if row else "?"


#: The names a query filter may match, by option: (noun, SQL of the known names).
_KNOWN_NAMES = {
    "source": ("source", "SELECT name AS n FROM sources"),
    "release": ("release", "SELECT release AS n FROM stacks"),
    "stack": ("stack", "SELECT name AS n FROM stacks"),
    "package": ("package", "SELECT name AS n FROM specs"),
}


async def require_match(store: Store, option: str, glob: str | None) -> None:
    """UsageError naming ``--option GLOB`` if the name or glob matches nothing known.

    ``option`` is one of source, release, stack, package; None: no filter, nothing to check.
    """
    if glob is None:
        return
    noun, names = _KNOWN_NAMES[option]
    condition, param = name_filter(store, "k.n", glob)
    async with store.conn.execute(
        f"SELECT 1 FROM ({names}) k WHERE {condition} LIMIT 1", (param,)
    ) as cursor:
        found = await cursor.fetchone()
    if found is None:
        raise UsageError(f"--{option} {glob} matches no {noun} in the database")
