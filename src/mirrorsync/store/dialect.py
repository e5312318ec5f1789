"""The few places where SQLite's SQL and PostgreSQL's differ, said once each.

The store's statements are written in the subset both accept (``INSERT ... ON
CONFLICT``, ``RETURNING``, ``count(*) FILTER``, ``?`` placeholders, translated
for PostgreSQL at the connection edge by :mod:`mirrorsync.store.postgres`).
What cannot be shared is here: how a write transaction starts (and so how
writers are serialised), string aggregation, a JSON list of ids as rows, glob
matching, schema introspection, the types in migrations, and how the memberships
of one spec, or of a set of specs, are found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mirrorsync.records import record
from mirrorsync.text import compiled

#: Key of the transaction-level advisory lock that serialises PostgreSQL migrations.
MIGRATION_LOCK_KEY = 0x6D69_7273_0001  # "mirs" 1


@record(frozen=True, slots=True)
class Dialect:
    name: str  # "sqlite" | "postgresql": also the suffix of a per-dialect migration body
    #: Starts a write transaction. SQLite's IMMEDIATE takes the write lock at once,
    #: so two writers never deadlock upgrading a read lock; PostgreSQL locks rows
    #: as it writes them (the run lock keeps runs apart, see mirrorsync.lock).
    begin_write: str
    #: Every table of the current schema, as (count of tables, count named schema_migrations).
    tables_sql: str
    #: A join (``... ON``) that keeps the left table outer: SQLite's planner takes
    #: CROSS JOIN as that order; PostgreSQL plans a plain JOIN (and refuses CROSS ... ON).
    ordered_join: str

    @property
    def postgresql(self) -> bool:
        return self.name == "postgresql"

    def string_agg(self, expr: str, separator: str) -> str:
        """``expr`` of every row joined with the literal ``separator``."""
        sep = separator.replace("'", "''")
        if self.postgresql:
            return f"string_agg({expr}, '{sep}')"
        return f"group_concat({expr}, '{sep}')"

    def id_list(self, ids: Sequence[int]) -> tuple[str, object]:
        """A ``FROM`` item giving ``ids`` as rows ``j.value`` in order ``j.key``, and
        the one parameter it binds."""
        if self.postgresql:
            return "unnest(CAST(? AS BIGINT[])) WITH ORDINALITY AS j(value, key)", list(ids)
        import json  # status never sends a list of IDs (start-up)

        return "json_each(?) j", json.dumps(list(ids))

    def memberships_of(self, spec: str, alias: str = "m") -> tuple[str, str]:
        """(table, condition) giving the memberships of the spec id ``spec`` as rows
        ``alias`` with ``stack_id``, ``entered`` and ``left`` (not ``spec_id``: it is
        ``spec``): ``FROM table alias WHERE condition`` or ``JOIN table alias ON
        condition``. PostgreSQL keeps no index by spec (migration 0015): each row of
        membership_groups whose array holds the spec is one of its memberships, the
        array searched by halves (it is ascending), where the view ``memberships``
        would unnest every array. ``spec`` is evaluated twice there. Each evaluation
        reads every group's array: for one spec that is one pass (a spec's stays:
        0.8 ms among 1,200 groups, 1.0 ms through :meth:`memberships_among`, which
        copies each array), for the specs of a package one per spec, where
        :meth:`memberships_among` reads them once."""
        if self.postgresql:
            ids = f"{alias}.spec_ids"
            return (
                "membership_groups",
                f"{ids}[width_bucket(CAST({spec} AS INTEGER), {ids})] = {spec}",
            )
        return "memberships", f"{alias}.spec_id = {spec}"

    def memberships_among(self, name: str, specs: str, where: str = "") -> str:
        """A common table expression (``WITH`` this ``SELECT ...``) ``name`` of rows
        ``stack_id``, ``spec_id``, ``entered``, ``left``: the memberships of the
        distinct spec ids the query ``specs`` selects, among those whose
        ``g.stack_id``, ``g.entered`` and ``g.left`` satisfy ``where``. Parameters
        bind in that order: ``where``'s, then ``specs``'s.

        SQLite inlines it as a view and finds each spec's by index, as before
        (``memberships_by_spec``, or the primary key given a list of stacks).
        PostgreSQL has no index by spec (migration 0015), and :meth:`memberships_of`
        for each spec reads every group's array once per spec, detoasting it each
        time: here the groups satisfying ``where`` are read once, each array
        detoasted once (``array_cat`` with an empty array returns it detoasted;
        ``OFFSET 0`` keeps the planner from pulling either subquery up), and each
        wanted id is searched in it by halves (``width_bucket``, the array is
        ascending). The ``LATERAL`` join keeps the groups on the outer side, the
        wanted ids are one row (an ``InitPlan`` in the lateral side would be costed
        once per group, enough to pass ``jit_above_cost`` at a release's scale), and
        the expression is materialised (``MATERIALIZED``), so however the statement
        joins it, the groups are read once per statement.
        """
        if self.postgresql:
            return (
                f"{name} AS MATERIALIZED (SELECT g.stack_id, w.id AS spec_id, g.entered, g.left"
                " FROM (SELECT g.stack_id, g.entered, g.left, array_cat(g.spec_ids, '{}') AS ids"
                f" FROM membership_groups g{f' WHERE {where}' if where else ''} OFFSET 0) g"
                " CROSS JOIN (SELECT ARRAY(SELECT DISTINCT CAST(x.id AS INTEGER)"
                f" FROM ({specs}) x(id)) AS ids OFFSET 0) wanted"
                " CROSS JOIN LATERAL (SELECT w.id FROM unnest(wanted.ids) w(id)"
                " WHERE g.ids[width_bucket(w.id, g.ids)] = w.id OFFSET 0) w)"
            )
        condition = f"{where} AND " if where else ""
        return (
            f"{name} AS (SELECT g.stack_id, g.spec_id, g.entered, g.left FROM memberships g"
            f" WHERE {condition}g.spec_id IN ({specs}))"
        )

    def glob(self, value: str, pattern: str) -> str:
        """``value`` matches the glob ``pattern`` (SQLite GLOB syntax, case sensitive)."""
        if self.postgresql:
            return f"mirrorsync_glob({value}, {pattern})"
        return f"{value} GLOB {pattern}"

    def migration(self, sql: str) -> str:
        """A migration written for SQLite, in this dialect's types."""
        if not self.postgresql:
            return sql
        for pattern, replacement in _POSTGRES_DDL:  # compiled here: SQLite never needs them
            sql = compiled(pattern, re.IGNORECASE).sub(replacement, sql)
        return sql


SQLITE = Dialect(
    "sqlite",
    begin_write="BEGIN IMMEDIATE",
    tables_sql="SELECT count(*), count(*) FILTER (WHERE name = 'schema_migrations')"
    " FROM sqlite_master WHERE type = 'table'",
    ordered_join="CROSS JOIN",
)

POSTGRESQL = Dialect(
    "postgresql",
    begin_write="BEGIN",
    tables_sql="SELECT count(*), count(*) FILTER (WHERE table_name = 'schema_migrations')"
    " FROM information_schema.tables"
    " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    ordered_join="JOIN",
)

# SQLite's types in PostgreSQL's: ids become identity columns (ids are still
# given by the database, in increasing order); INTEGER is 64-bit in SQLite, so
# BIGINT (sizes in bytes pass 2**31); BLOB is BYTEA; WITHOUT ROWID is SQLite's
# storage choice only; instr is strpos. Text timestamps stay text: ISO 8601 UTC sorts as text.
_POSTGRES_DDL = (
    (
        r"\bid\s+INTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b",
        "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (r"\bINTEGER\b", "BIGINT"),
    (r"\bBLOB\b", "BYTEA"),
    (r"\)\s*WITHOUT\s+ROWID", ")"),
    (r"\binstr\(", "strpos("),  # same arguments, same result
)
